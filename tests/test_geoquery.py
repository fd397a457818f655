"""GeoQuery in Prolog, executed by the real SWI-Prolog: the packaged dev gold is accepted, hostile
queries are contained (each refused or stopped, the engine serving the next query), SymGen's
answer repair, the empty-answer rule, evaluation, generation through a loopback server right half
the time, and a clear message where SWI-Prolog is missing."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys

import pytest

from symgen_datasets.tasks import get_task
from symgen_datasets.verifiers.agreement import distinct_programs, majority_vote
from symgen_datasets.verifiers.prolog import swipl
from tests.llm_servers import LLMServer, OracleResponder

pytestmark = pytest.mark.skipif(swipl() is None, reason="SWI-Prolog is not installed (make install installs it)")

TASK = get_task("geoquery")
DEV = [json.loads(line) for line in TASK.references_path().read_text().splitlines()]


def symgen(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "symgen_datasets.cli", *args], capture_output=True, text=True,
                          timeout=600, env=env)


@pytest.fixture(scope="module")
def verifier():
    knowledge = TASK.load_knowledge(TASK.options_with_defaults({}))
    with TASK.make_verifier(knowledge, timeout_s=2.0) as verifier:
        yield verifier


def test_the_dev_gold_is_accepted():
    checked = symgen("check", "geoquery", "--input", str(TASK.references_path()))
    assert checked.returncode == 0, checked.stderr[-2000:]
    valid = int(checked.stdout.split("valid ")[-1].split(" of ")[0])
    assert valid >= 277 and "valid" in checked.stdout.splitlines()[-1]


def test_answers_are_denotations(verifier):
    utah = "answer(A,(state(A),next_to(A,B),const(B,stateid(utah))))"
    renamed = "answer(X,(state(X),next_to(X,Y),const(Y,stateid(utah))))"
    [first, second, texas] = verifier.execute(None, [utah, renamed, utah.replace("utah", "texas")])
    assert first.key == second.key == "[arizona,colorado,idaho,nevada,'new mexico',wyoming]"
    assert texas.ok and texas.key != first.key


HOSTILE = {
    "shell": "answer(A,(state(A),shell('touch /tmp/symgen-geoquery-pwned')))",
    "shell in a superlative": "answer(A,largest(A,(state(A),shell('touch /tmp/symgen-geoquery-pwned'))))",
    "file access": "answer(A,(open('/etc/passwd',read,S),read_term(S,A,[])))",
    "consult": "answer(A,(consult('/etc/passwd'),state(A)))",
    "assert": "answer(A,(assert(state(stateid(atlantis))),state(A)))",
    "halt": "answer(A,(state(A),halt))",
    "a variable goal": "answer(A,(const(G,halt),G))",
    "endless recursion": "answer(A," + "not(" * 200000 + "state(A)" + ")" * 200000 + ")",
    "huge findall": "answer(A,count(B,(city(B),city(C),city(D),city(E)),A))",
    "not a query": "halt",
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_queries_are_contained_and_the_engine_serves_on(verifier, name):
    if os.path.exists("/tmp/symgen-geoquery-pwned"):
        os.remove("/tmp/symgen-geoquery-pwned")
    hostile, after = verifier.execute(None, [HOSTILE[name], "answer(A,count(B,state(B),A))"])
    assert hostile.status in ("error", "timeout"), (name, hostile)
    assert after.key == "[51]"  # the same worker's engine answers the next query
    assert not os.path.exists("/tmp/symgen-geoquery-pwned")
    [state] = verifier.execute(None, ["answer(A,(const(A,stateid(atlantis)),state(A)))"])
    assert state.key == "[]"  # nothing was asserted


def test_symgens_answer_repair():
    assert TASK.parse_answer("A,(state(A),next_to(A,B),const(B,stateid(utah)) :- foo.") == \
        "answer(A,(state(A),next_to(A,B),const(B,stateid(utah))))"
    assert TASK.parse_answer("answer(A,count(B,river(B),A)) % the rivers\nQuestion: x") == "answer(A,count(B,river(B),A))"
    assert TASK.parse_answer("```prolog\nanswer(A,state(A))\n```") == "answer(A,state(A))"
    assert TASK.parse_answer("   ") is None


def test_an_empty_answer_never_agrees_by_default(verifier):
    empty = ["answer(A,(state(A),const(A,stateid(atlantis))))", "answer(A,(river(A),const(A,riverid(thames))))"]
    right = ["answer(A,count(B,state(B),A))"]
    candidates = [*empty, *empty, *right]
    programs, index = distinct_programs(candidates, verifier.normalize)
    outcomes = verifier.execute(None, programs)
    vote = majority_vote(candidates, outcomes, None, (programs, index), verifier.cluster_labels(outcomes, index),
                         verifier.barred_labels)
    assert (vote.program, vote.votes) == (right[0], 1)  # four empty answers vote for nothing


def test_evaluate_executes_predictions_against_gold(tmp_path):
    rows = DEV[:6]
    predictions = [
        rows[0]["prolog"],                                                     # gold
        rows[1]["prolog"].replace("A", "Z").replace("B", "Y"),                 # variables renamed
        rows[2]["prolog"].replace("utah", "texas") if "utah" in rows[2]["prolog"] else "answer(A,state(A))",
        rows[3]["prolog"][:-3],                                                # broken syntax
        "answer(A,(state(A),shell(ls)))",                                      # refused
        None,                                                                  # no prediction
    ]
    references = tmp_path / "refs.jsonl"
    references.write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "pred.jsonl").write_text("".join(json.dumps({"prolog": p}) + "\n" for p in predictions))
    done = symgen("evaluate", "--task", "geoquery", "--references", str(references), "--predictions",
                  str(tmp_path / "pred.jsonl"), "--output-dir", str(tmp_path / "eval"), "--json")
    assert done.returncode == 0, done.stderr[-2000:]
    metrics = json.loads(done.stdout.strip().splitlines()[-1])
    saved = [json.loads(line) for line in (tmp_path / "eval" / "predictions.jsonl").read_text().splitlines()]
    assert [r["correct"] for r in saved] == [True, True, False, False, False, False]
    assert metrics["execution_accuracy"] == pytest.approx(2 / 6) and metrics["exact_match"] == pytest.approx(1 / 6)
    assert metrics["valid"] == pytest.approx(3 / 6)


def test_generate_through_a_server_right_half_the_time(tmp_path):
    rows = DEV[:60]
    gold = {r["nl"]: r["prolog"] for r in rows}
    oracle = OracleResponder(gold, corrupt=lambda answer, rng: answer.replace("(", " (", 1)[:-2])
    questions = tmp_path / "questions.jsonl"
    questions.write_text("".join(json.dumps({"nl": r["nl"]}) + "\n" for r in rows))
    out = tmp_path / "out"
    with LLMServer(oracle) as server:
        done = symgen("generate", "geoquery", "--questions", str(questions), "--generator", f"tgi:{server.url}",
                      "--num-samples", "10", "--min-votes", "3", "--output", str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    import datasets

    kept = datasets.load_dataset(str(out), split="train").to_list()
    knowledge = TASK.load_knowledge(TASK.options_with_defaults({}))
    with TASK.make_verifier(knowledge) as verifier:
        pairs = list(verifier.execute_stream((None, [r["prolog"], gold[r["nl"]]]) for r in kept))
    right = sum(mine.ok and mine.key == theirs.key for mine, theirs in pairs)
    assert len(kept) >= 0.6 * len(rows) and right >= 0.9 * len(kept), (len(kept), right)
    card = (out / "README.md").read_text()
    assert "SWI-Prolog" in card and "empty_results: abstain" in card


def test_without_swi_prolog_geoquery_says_how_to_install_it_and_other_tasks_run(tmp_path):
    env = {**os.environ, "PATH": str(tmp_path)}  # no swipl on it
    done = symgen("check", "geoquery", "--input", str(TASK.references_path()), env=env)
    assert done.returncode == 2 and "apt-get install swi-prolog-nox" in done.stderr and "Traceback" not in done.stderr
    other = symgen("check", "break", "--input", str(get_task("break").references_path()), env=env)
    assert other.returncode == 0, other.stderr[-2000:]


def test_the_builder_and_s3_run_on_geoquery(tmp_path, tiny_llama):
    from symgen_datasets.builders import GeoquerySynth

    rows = DEV[:12]
    questions = tmp_path / "q.jsonl"
    questions.write_text("".join(json.dumps({"nl": r["nl"]}) + "\n" for r in rows))
    oracle = OracleResponder({r["nl"]: r["prolog"] for r in DEV}, accuracy=0.8, questions=[r["nl"] for r in DEV[40:]],
                             corrupt=lambda answer, rng: answer[:-2])
    validation, test = tmp_path / "validation.jsonl", tmp_path / "test.jsonl"
    validation.write_text("".join(json.dumps(r) + "\n" for r in DEV[12:22]))
    test.write_text("".join(json.dumps(r) + "\n" for r in DEV[22:32]))
    with LLMServer(oracle) as server:
        builder = GeoquerySynth(cache_dir=str(tmp_path / "cache"), generator=f"tgi:{server.url}", questions=str(questions),
                                num_samples=6, min_votes=2)
        builder.download_and_prepare()
        built = builder.as_dataset(split="train")
        s3 = symgen("s3", "geoquery", "--validation", str(validation), "--test", str(test), "--rounds", "1",
                    "--generator", f"tgi:{server.url}", "--model", str(tiny_llama), "--output-dir", str(tmp_path / "s3"),
                    "--num-questions", "12", "--num-samples", "4", "--min-votes", "2", "--max-steps", "2",
                    "--per-device-train-batch-size", "4")
    assert built.column_names[:2] == ["nl", "prolog"] and 0 < len(built) <= 12
    assert s3.returncode == 0, s3.stderr[-3000:]
    rounds = json.loads((tmp_path / "s3" / "s3_state.json").read_text())["rounds"]
    assert len(rounds) == 2 and rounds[1]["errors_extrapolated"] > 0 and rounds[1]["test_after"] is not None
