"""`run` over objects the caller owns: several rounds in one process (as the S3 loop does) with
one generator, event loop, verifier and process group, none of them closed or left by `run`."""

from __future__ import annotations

from dataclasses import dataclass

from symgen_datasets.generators import EventLoopThread, SamplingParams, from_spec
from symgen_datasets.pipeline import GenerateSettings, generate, run
from symgen_datasets.pipeline.distributed import Node
from symgen_datasets.tasks import get_task
from tests.llm_servers import LLMServer


@dataclass
class CallersNode(Node):
    """The caller's process group (a single process here), counting who leaves it."""

    left: int = 0

    def leave(self) -> None:
        self.left += 1


def test_rounds_share_the_callers_generator_loop_verifier_and_node(tmp_path, oracle):
    task = get_task("geoquery_sql")
    node = CallersNode()
    loop = EventLoopThread()
    with LLMServer(oracle) as server:
        generator = from_spec(f"tgi:{server.url}")
        verifier = task.make_verifier(task.load_knowledge({}), timeout_s=5.0)
        kept = []
        for round_number in range(2):
            settings = GenerateSettings(task="geoquery_sql", generator="unused: the caller's is used", num_questions=4,
                                        num_samples=4, min_votes=2, seed=round_number,
                                        output=str(tmp_path / f"round-{round_number}"))
            result = generate(settings, task=task, generator=generator, loop=loop, verifier=verifier, node=node)
            kept.append(len(result.rows))
            assert result.generator_provenance == "tgi (test-llm)" and result.output.is_dir()
        asked = server.requests
        after = loop.run(generator.sample("-- Question: how many states are there\n", SamplingParams(0.0, 20, ("\n\n",)), [1]))
        assert server.requests == asked + 1 and after[0].text  # the generator's connections are still open
        outcome = verifier.execute(verifier.context({"db_id": "geography_db"}), ["SELECT count(*) FROM state"])[0]
        assert outcome.ok  # the verifier's workers are still up
        loop.run(generator.aclose())
    verifier.close()
    loop.close()
    assert node.left == 0 and all(kept)


def test_run_without_output_keeps_the_rows_in_its_work_folder(tmp_path, oracle):
    with LLMServer(oracle) as server:
        result = run(GenerateSettings(task="geoquery_sql", generator=f"tgi:{server.url}", num_questions=3, num_samples=3,
                                      min_votes=1, work_dir=str(tmp_path / "work")))
    assert result.output is None and len(result.rows) >= 1
    assert all(path.startswith(str(tmp_path / "work")) for path in result.rows.paths)
