"""`symgen s3`: two rounds on GeoQuery-SQL against a TGI-protocol server and a tiny model, pushed
to the loopback Hub as three versions with lineage, no validation question in any of them; one
round on RTE with the MiniLM encoder; kill -9 during round 2, then --resume, ends with the same
versions as the uninterrupted run."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from symgen_datasets.s3.synthesis import InputIndex
from symgen_datasets.tasks import get_task
from tests.llm_servers import LLMServer, OracleResponder, PairResponder

ROOT = Path(__file__).resolve().parent.parent
TRAIN_FLAGS = ["--max-steps", "2", "--per-device-train-batch-size", "4", "--max-target-length", "24", "--logging-steps", "1"]


def header(text: str) -> dict:
    return yaml.safe_load(text.split("---")[1])


@pytest.fixture(scope="module")
def geo(tmp_path_factory, tiny_llama):
    """Validation (12 real dev rows), a held-out test file (20 other dev rows), and an LLM whose
    question pool holds the validation questions too (so a leak would happen without the check)."""
    root = tmp_path_factory.mktemp("geo")
    task = get_task("geoquery_sql")
    dev = [json.loads(line) for line in task.references_path().read_text().splitlines()]
    validation, test = dev[:12], dev[12:32]
    (root / "validation.jsonl").write_text("".join(json.dumps(r) + "\n" for r in validation))
    (root / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in test))
    pool = [r["question"] for r in dev[32:]] + [r["question"] for r in validation] * 5
    oracle = OracleResponder({r["question"]: r["query"] for r in dev}, accuracy=0.8, questions=pool)
    return {"root": root, "validation": validation, "oracle": oracle, "model": tiny_llama}


def s3_command(geo, server_url: str, output: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "symgen_datasets.cli", "s3", "geoquery_sql", "--validation",
            str(geo["root"] / "validation.jsonl"), "--test", str(geo["root"] / "test.jsonl"), "--rounds", "2",
            "--generator", f"tgi:{server_url}", "--model", str(geo["model"]), "--output-dir", str(output),
            "--num-questions", "12", "--num-samples", "4", "--min-votes", "2", "--concurrency", "4",
            "--errors-per-prompt", "3", "--examples-per-error", "2", *extra, *TRAIN_FLAGS]


def rows_at(repo, tag: str) -> list[dict]:
    files = repo.commits[repo.tags[tag]].files
    table = pq.read_table(io.BytesIO(next(v for k, v in files.items() if k.endswith(".parquet"))))
    return table.to_pylist()


def test_two_rounds_on_geoquery_are_versions_with_lineage_and_no_validation_leak(geo, hub, tmp_path):
    task = get_task("geoquery_sql")
    with LLMServer(geo["oracle"]) as server:
        done = subprocess.run(s3_command(geo, server.url, tmp_path / "run", "--push-to-hub", "symgen/geo-s3"),
                              env=hub.env, capture_output=True, text=True, timeout=900)
        requests = server.requests
    assert done.returncode == 0, (done.stdout[-3000:], done.stderr[-5000:])
    repo = hub.repos["symgen/geo-s3"]
    assert sorted(repo.tags) == ["v1.0.0", "v1.1.0", "v1.2.0"]
    validation = InputIndex(task, geo["validation"])
    parents, before = [], None
    for round_index, tag in enumerate(["v1.0.0", "v1.1.0", "v1.2.0"]):
        files = repo.commits[repo.tags[tag]].files
        card = files["README.md"].decode()
        s3 = header(card)["symgen"]["s3"]
        assert s3["round"] == round_index and header(card)["symgen"]["version"] == tag[1:]
        parents.append(s3["parent_version"])
        assert 0.0 <= s3["validation_after"] <= 1.0
        assert (s3["test_after"] is not None) == (round_index == 2)  # the test set: on the last round only (default)
        assert s3["validation_before"] == before  # the parent's "after"
        before = s3["validation_after"]
        assert [h["round"] for h in s3["history"]] == list(range(round_index + 1))
        assert s3["model"] == geo["model"].name and str(geo["model"]) not in card  # no local path on the Hub
        assert "s3_accuracy.png" in files and files["s3_accuracy.png"][:4] == b"\x89PNG"
        assert "![accuracy per round](s3_accuracy.png)" in card
        rows = rows_at(repo, tag)
        assert len(rows) == s3["rows"] > 0
        assert not [r for r in rows if validation.match(r)], "a validation question is in a training version"
        if round_index:
            assert s3["errors_extrapolated"] > 0 and s3["examples_added"] == sum(r["s3_round"] == round_index for r in rows)
            assert (tmp_path / "run" / f"round-{round_index}" / "errors.jsonl").is_file()
    assert parents == [None, "1.0.0", "1.1.0"]
    # the LLM offered the validation questions again and again: the check counted and dropped them
    state = json.loads((tmp_path / "run" / "s3_state.json").read_text())
    dropped = sum(r["counts"].get("duplicates", 0) for r in state["rounds"])
    assert dropped > 0
    assert all(r["leak_check"]["exact"] == 0 and r["leak_check"]["normalised"] == 0 for r in state["rounds"])
    assert "validation_after" in state["rounds"][-1] and requests > 0
    geo["uninterrupted"] = {"state": state, "requests": requests, "rows": rows_at(repo, "v1.2.0")}


def test_a_run_killed_during_round_two_resumes_to_the_same_versions(geo, hub, tmp_path):
    if "uninterrupted" not in geo:
        pytest.skip("needs the uninterrupted run of the previous test")
    output = tmp_path / "run"
    with LLMServer(geo["oracle"]) as server:
        process = subprocess.Popen(s3_command(geo, server.url, output), env=hub.env, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.time() + 600
        state_file = output / "s3_state.json"
        while time.time() < deadline:  # round 0 and 1 finished, round 2 under way
            if state_file.is_file() and len(json.loads(state_file.read_text()).get("rounds", [])) == 2 \
                    and (output / "round-2" / "work" / "responses.sqlite").is_file():
                break
            if process.poll() is not None:
                pytest.fail("the run ended before round 2")
            time.sleep(0.2)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        before_resume = server.requests
        again = subprocess.run(s3_command(geo, server.url, output, "--resume"), env=hub.env, capture_output=True,
                               text=True, timeout=900)
        total = server.requests
    assert again.returncode == 0, again.stderr[-4000:]
    state = json.loads((output / "s3_state.json").read_text())
    reference = geo["uninterrupted"]["state"]
    keys = ("round", "version", "parent_version", "rows", "examples_added", "errors_extrapolated", "validation_after",
            "test_after", "leak_check")
    assert [{k: r[k] for k in keys} for r in state["rounds"]] == [{k: r[k] for k in keys} for r in reference["rounds"]]
    import datasets

    final = datasets.load_dataset(str(output / "round-2" / "dataset"), "default", split="train").to_list()
    assert [r["question"] for r in final] == [r["question"] for r in geo["uninterrupted"]["rows"]]
    # finished rounds were not asked again; what the kill can cost is the unfinished work in flight: the
    # response cache stores a question's candidates together, and answer generation keeps 5 questions of
    # 4 candidates in flight (--concurrency 4, --num-samples 4), so at most 20 requests are sent twice
    assert total <= geo["uninterrupted"]["requests"] + 20 and total > before_resume


def test_resume_refuses_other_settings_and_a_new_run_refuses_a_used_folder(geo, tmp_path):
    from symgen_datasets.cli import main

    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "something").write_text("x")
    base = ["s3", "geoquery_sql", "--validation", str(geo["root"] / "validation.jsonl"), "--generator", "tgi:http://127.0.0.1:9"]
    assert main([*base, "--output-dir", str(tmp_path / "used")]) == 2
    assert main([*base, "--output-dir", str(tmp_path / "none"), "--resume"]) == 2
    assert main([*base, "--output-dir", str(tmp_path / "bad"), "--max-steps", "1", "--no-such-flag", "3"]) == 2


def test_one_round_on_rte_with_the_minilm_encoder(tmp_path):
    from symgen_datasets.cli import main

    fixture = ROOT / "tests" / "fixtures" / "rte" / "train_sample.jsonl"
    rows = [json.loads(line) for line in fixture.read_text().splitlines()]
    validation, pool = rows[:24], rows[24:]
    (tmp_path / "validation.jsonl").write_text("".join(json.dumps(r) + "\n" for r in validation))
    with LLMServer(PairResponder(pool + validation)) as server:
        assert main(["s3", "rte", "--validation", str(tmp_path / "validation.jsonl"), "--rounds", "1",
                     "--generator", f"tgi:{server.url}", "--output-dir", str(tmp_path / "run"), "--num-questions", "24",
                     "--examples-per-error", "1", "--max-errors", "12", "--concurrency", "4",
                     "--max-steps", "3", "--per-device-train-batch-size", "8", "--max-source-length", "128"]) == 0
        prompts = [seen["prompt"] for seen in server.seen]
    state = json.loads((tmp_path / "run" / "s3_state.json").read_text())
    assert [r["round"] for r in state["rounds"]] == [0, 1]
    seed, extrapolated = state["rounds"]
    assert seed["synthesis"] == "seed: label-conditioned generation" and seed["examples_added"] > 0
    assert extrapolated["errors_extrapolated"] == min(12, round((1 - seed["validation_after"]) * 24))
    assert any("A classifier got the examples below wrong" in p for p in prompts)
    config = json.loads((tmp_path / "run" / "round-1" / "model" / "symgen_task_model.json").read_text())
    model_config = json.loads((tmp_path / "run" / "round-1" / "model" / "config.json").read_text())
    assert config["architecture"] == "classification" and config["base_model"] == "embedded"
    assert model_config["architectures"] == ["BertForSequenceClassification"] and model_config["num_hidden_layers"] == 6
    card = (tmp_path / "run" / "round-1" / "dataset" / "README.md").read_text()
    s3 = header(card)["symgen"]["s3"]
    assert s3["parent_version"] == "1.0.0" and s3["test_after"] is not None  # the packaged RTE dev set
    validation_index = InputIndex(get_task("rte"), validation)
    import datasets

    trained = datasets.load_dataset(str(tmp_path / "run" / "round-1" / "dataset"), "default", split="train").to_list()
    assert trained and not [r for r in trained if validation_index.match(r)]
    assert {r["label"] for r in trained} <= {0, 1}


def test_commands_that_need_a_verifier_refuse_a_classification_task(capsys):
    from symgen_datasets.cli import main

    dev = str(get_task("rte").references_path())
    for command in (["generate", "rte"], ["check", "rte", "--input", dev], ["calibrate", "rte", "--questions", dev]):
        assert main(command) == 2
        assert "has no verifier" in capsys.readouterr().err


def test_an_extrapolation_answered_with_sql_is_rejected_at_parsing_and_the_round_is_recorded_empty(geo, tmp_path):
    """The LLM answers every extrapolation prompt with SQL instead of a question: nothing is
    parsed as a question, the round is recorded with no new rows (the previous dataset and model
    stand), and --patience ends the loop; before, the round aborted and --resume repeated it."""
    task = get_task("geoquery_sql")
    garbage = ["SELECT count(*) FROM state", "SELECT city_name FROM city WHERE population > 150000;",
               "```sql\nSELECT river_name FROM river\n```", "with t as (select 1) select * from t"]
    for text in garbage:
        assert task.parse_question(" " + text + "\n", {"db_id": "geography_db"}) is None, text
    assert task.parse_question(" how many rivers run through the state of colorado ?\n", {"db_id": "geography_db"})

    oracle = geo["oracle"]

    def responder(prompt: str, parameters: dict, seed: int):
        if "A small model answered the questions below wrong" in prompt:
            return " " + garbage[seed % len(garbage)] + "\n", [-0.2]
        return oracle(prompt, parameters, seed)

    output = tmp_path / "run"
    with LLMServer(responder) as server:
        # the rounds train LoRA adapters (a trailing training flag), which S3's evaluations load
        done = subprocess.run(s3_command(geo, server.url, output, "--patience", "1", "--lora-r", "4"), capture_output=True,
                              text=True, timeout=900)
    assert done.returncode == 0, (done.stdout[-3000:], done.stderr[-5000:])
    assert list(output.rglob("adapter_model.safetensors")) and not list(output.rglob("model.safetensors"))
    rounds = json.loads((output / "s3_state.json").read_text())["rounds"]
    assert [r["round"] for r in rounds] == [0, 1]  # round 2 not run: no improvement for --patience 1 round
    empty = rounds[1]
    assert empty["no_new_rows"] and empty["examples_added"] == 0 and empty["counts"]["parsed"] == 0
    assert empty["counts"]["completions"] > 0 and empty["dataset"] == rounds[0]["dataset"]
    assert empty["validation_after"] == rounds[0]["validation_after"]
    assert "round 1: no new example survived" in done.stderr
    # the evaluation cost is said before round 0, and measured after each validation
    assert "symgen s3: evaluation: each round predicts the 12 validation rows; the 20 test rows are predicted on " \
           "the last round only" in done.stderr
    assert "round 0: validation predicted at" in done.stderr


def test_the_resume_fingerprint_holds_the_demonstrations_by_content(tmp_path):
    from symgen_datasets.pipeline import GenerateSettings
    from symgen_datasets.s3.loop import S3Settings

    demos = tmp_path / "demos.jsonl"
    demos.write_text((get_task("geoquery_sql").packaged / "10_shot.jsonl").read_text())
    validation = tmp_path / "validation.jsonl"
    validation.write_text(demos.read_text())

    def fingerprint() -> dict:
        return S3Settings(GenerateSettings(task="geoquery_sql", demos=str(demos)), str(validation), str(tmp_path / "o")).fingerprint()

    before = fingerprint()
    demos.write_text(demos.read_text().replace("texas", "ohio"))  # same path, other demonstrations
    assert fingerprint() != before and fingerprint()["generate"]["demos"]["file"] == "demos.jsonl"
