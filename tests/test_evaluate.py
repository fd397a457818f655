"""Evaluation: metrics equal to the field's official ones on hand-checked predictions, every task's
real dev set scoring 1.0 with gold predictions, `symgen evaluate` on files and on an LLM server,
and the local `evaluate` module."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from symgen_datasets.cli import main
from symgen_datasets.errors import InputError
from symgen_datasets.metrics import EVALUATE_MODULE
from symgen_datasets.metrics.sql import hardness, results_match
from symgen_datasets.tasks import get_task, registered_tasks

FIXTURES = Path(__file__).parent / "fixtures"

# Hand-checked on concert_singer (packaged with the spider task): singer rows are
# (1 Joe Sharp, Netherlands, 52), (2 Timbaland, United States, 32), (3 Justin Brown, France, 29),
# (4 Rose White, France, 41), (5 John Nizinik, France, 43), (6 Tribal King, France, 25).
EX_CASES = [
    # (gold, prediction, correct by the official evaluator's default semantics)
    ("SELECT name, age FROM singer WHERE age > 40", "SELECT age, name FROM singer WHERE age > 40", True),  # column order
    ("SELECT name FROM singer WHERE country = 'France'",
     "SELECT name FROM singer WHERE country = 'France' ORDER BY age DESC", True),  # row order: gold has no ORDER BY
    ("SELECT name FROM singer ORDER BY age", "SELECT name FROM singer ORDER BY age DESC", False),  # gold orders rows
    ("SELECT name FROM singer ORDER BY age", "SELECT name FROM singer", False),  # table order is not by age
    ("SELECT name FROM singer ORDER BY age DESC LIMIT 1", "SELECT name FROM singer WHERE age = 52", True),  # one row
    ("SELECT DISTINCT country FROM singer", "SELECT country FROM singer", True),  # DISTINCT removed on both sides
    ("SELECT count(*) FROM singer WHERE country = 'France'", "SELECT count(*) FROM singer WHERE country = 'france'",
     False),  # a literal of another case matches no row
    ("SELECT count(*) FROM singer WHERE age > 30", "SELECT count(*) FROM singer WHERE age > 30.0", True),
    ("SELECT count(*) FROM singer", "SELECT count(*) * 1.0 FROM singer", True),  # 6 == 6.0
    ("SELECT count(*) FROM singer", "SELECT count(*) + 1 FROM singer", False),
    ("SELECT name FROM singer WHERE age > 100", "SELECT country FROM singer WHERE age < 0", True),  # both empty
    ("SELECT name FROM singer WHERE age > 50", "SELECT name, age FROM singer WHERE age > 50", False),  # extra column
    ("SELECT name FROM singer WHERE age > 50", "SELECT nme FROM singer", False),  # does not execute
    ("SELECT name FROM singer WHERE singer_id = 1", "SELECT name FROM singer WHERE singer_id = value AND age > 0", True),
    # ^ evaluation.py rewrites " value " (spaces on both sides) to " 1 "; at the end of the query it does not:
    ("SELECT name FROM singer WHERE singer_id = 1", "SELECT name FROM singer WHERE singer_id = value", False),
    ("SELECT name FROM singer WHERE age >= 52", "SELECT name FROM singer WHERE age > = 52", True),  # "> =" joined
]


def test_execution_accuracy_matches_the_official_semantics_on_hand_checked_predictions(tmp_path):
    task = get_task("spider")
    references = [{"question": f"q{i}", "query": gold, "db_id": "concert_singer"} for i, (gold, _, _) in enumerate(EX_CASES)]
    predictions = [prediction for _, prediction, _ in EX_CASES]
    knowledge = task.load_knowledge({})
    try:
        evaluation = task.evaluate(references, predictions, knowledge)
    finally:
        knowledge.cleanup()
    assert [row["correct"] for row in evaluation.per_row] == [expected for _, _, expected in EX_CASES]
    assert evaluation.metrics["execution_accuracy"] == pytest.approx(sum(c for *_, c in EX_CASES) / len(EX_CASES))
    invalid = [i for i, row in enumerate(evaluation.per_row) if not row["valid"]]
    assert invalid == [12, 14] and "no such column" in evaluation.per_row[12]["error"]  # nme; value
    assert evaluation.metrics["valid_sql"] == pytest.approx((len(EX_CASES) - 2) / len(EX_CASES))
    # DISTINCT kept (the official --keep_distinct): the duplicate France rows now count
    from symgen_datasets.metrics.sql import sql_scores

    kept = sql_scores(references[5:6], predictions[5:6], task.databases().path, keep_distinct=True)
    assert kept.per_row[0]["correct"] is False


def test_results_match_is_a_bag_or_sequence_comparison_up_to_column_permutation():
    gold = [(1, "a"), (2, "b"), (2, "b")]
    assert results_match(gold, [("b", 2), ("a", 1), ("b", 2)], order_matters=False)
    assert not results_match(gold, [("b", 2), ("a", 1), ("a", 1)], order_matters=False)  # bags differ
    assert not results_match(gold, [("b", 2), ("a", 1), ("b", 2)], order_matters=True)
    assert results_match(gold, [("a", 1), ("b", 2), ("b", 2)], order_matters=True)
    # columns with the same values but paired differently are no permutation of each other
    assert not results_match([(1, 2), (2, 1)], [(1, 1), (2, 2)], order_matters=False)
    assert results_match([], [], order_matters=True) and not results_match([], [(1,)], order_matters=False)


def test_exact_match_normalises_spacing_case_and_operators():
    task = get_task("geoquery_sql")
    gold = "SELECT state_name FROM state WHERE population >= 1000000"
    references = [{"question": "q", "query": gold, "db_id": "geography_db"}] * 3
    predictions = ["select  STATE_NAME from state where population > = 1000000 ;", "SELECT state_name FROM state",
                   None]
    knowledge = task.load_knowledge({})
    try:
        evaluation = task.evaluate(references, predictions, knowledge)
    finally:
        knowledge.cleanup()
    assert [row["exact"] for row in evaluation.per_row] == [True, False, False]
    assert evaluation.per_row[2] == {"correct": False, "exact": False, "valid": False, "error": "no prediction"}


def test_hardness_gives_spiders_published_split_of_its_dev_set():
    levels = Counter(hardness(line.split("\t")[0]) for line in (FIXTURES / "spider_dev_gold.sql").read_text().splitlines()
                     if line.strip())
    assert levels == {"easy": 248, "medium": 446, "hard": 174, "extra": 166}


@pytest.mark.parametrize("name", sorted(registered_tasks()))
def test_every_task_scores_its_real_dev_set_with_gold_predictions_as_one(name):
    task = get_task(name)
    knowledge = task.load_knowledge(task.options_with_defaults({}))
    try:
        references = task.load_references(None, knowledge)
        knowledge.prepare({f: row[f] for f in task.context_fields} for row in references)
        evaluation = task.evaluate(references, [row[task.answer_field] for row in references], knowledge)
    finally:
        knowledge.cleanup()
    assert evaluation.primary == task.primary_metric
    assert len(evaluation.per_row) == len(references) >= 100
    if name == "geoquery":
        # two gold queries (nested superlatives over every city) run past the time limit in
        # GeoQuery's own evaluator too: they count as wrong there, and here
        slow = [r for r in evaluation.per_row if not r["correct"]]
        assert len(slow) <= 3 and all("time limit" in r.get("error", "") for r in slow), slow
        assert evaluation.metrics["exact_match"] == 1.0
        return
    assert evaluation.metrics[task.primary_metric] == 1.0, [r for r in evaluation.per_row if not r["correct"]][:3]
    assert all(value == 1.0 for value in evaluation.metrics.values())
    if name == "spider":
        assert {level: values["count"] for level, values in evaluation.breakdown.items()} == \
            dict(Counter(row["hardness"] for row in evaluation.per_row))


def test_text_metrics_score_wrong_predictions_below_one():
    mtop, qdmr, bash = get_task("mtop"), get_task("break"), get_task("nl2bash")
    top = "[IN:GET_WEATHER [SL:LOCATION Paris ] ]"
    m = mtop.evaluate([{"question": "weather in Paris", "logical_form": top}] * 3,
                      [top.replace("[", " [ ").replace("]", " ] "), "[IN:GET_WEATHER [SL:LOCATION London ] ]", "[IN:"], None)
    assert [r["correct"] for r in m.per_row] == [True, False, False]
    assert [r["template"] for r in m.per_row] == [True, True, False]  # same intents and slots, another word
    q = qdmr.evaluate([{"question_text": "q", "decomposition": "return dogs ;return number of #1"}] * 2,
                      ["return  dogs ; return number of #1", "return cats ;return number of #1"], None)
    assert [r["correct"] for r in q.per_row] == [True, False]
    b = bash.evaluate([{"nl": "list files", "bash": "ls -l"}, {"nl": "count", "bash": "wc -l file.txt"}],
                      ["ls  -l", "wc -c file.txt"], None)
    assert [r["correct"] for r in b.per_row] == [True, False]
    assert 0.5 < b.metrics["char_bleu"] < 1.0
    with pytest.raises(ValueError, match="2 predictions for 3 reference rows"):
        mtop.evaluate([{"question": "q", "logical_form": top}] * 3, [top, top], None)


def test_python_pass_at_1_runs_the_problems_own_tests_in_the_sandbox():
    task = get_task("python")
    knowledge = task.load_knowledge({})
    problems = task.load_references(None, knowledge)[:3]
    predictions = [problems[0]["canonical_solution"], "    return None\n", "    import os; os.system('true')\n" + problems[2]["canonical_solution"]]
    evaluation = task.evaluate(problems, predictions, knowledge)
    assert [r["correct"] for r in evaluation.per_row] == [True, False, False]
    assert "os.system is not allowed" in evaluation.per_row[2]["error"]  # a correct body that breaks out fails
    assert evaluation.metrics["pass@1"] == pytest.approx(1 / 3)


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_cli_evaluate_predictions_prints_json_and_saves_predictions_next_to_metrics(tmp_path, capsys):
    dev = [json.loads(line) for line in get_task("geoquery_sql").references_path().read_text().splitlines()]
    predictions = [{"query": row["query"]} for row in dev]
    predictions[0] = {"query": "SELECT 1"}
    predictions[1] = {"query": None}
    out = tmp_path / "eval"
    status = main(["evaluate", "--task", "geoquery_sql", "--predictions", str(write_jsonl(tmp_path / "p.jsonl", predictions)),
                   "--output-dir", str(out), "--json"])
    assert status == 0
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert last["execution_accuracy"] == pytest.approx(278 / 280) and last["count"] == 280
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["metrics"]["execution_accuracy"] == last["execution_accuracy"]
    assert metrics["references"]["packaged"] is True and len(metrics["references"]["sha256"]) == 64
    saved = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(saved) == 280 and saved[0]["prediction"] == "SELECT 1" and saved[0]["correct"] is False
    assert saved[2]["correct"] is True and saved[2]["question"] == dev[2]["question"]


def test_cli_evaluate_refuses_misaligned_or_malformed_predictions(tmp_path, capsys):
    short = write_jsonl(tmp_path / "short.jsonl", [{"query": "SELECT 1"}])
    assert main(["evaluate", "--task", "geoquery_sql", "--predictions", str(short), "--output-dir", str(tmp_path / "o")]) == 2
    assert "1 predictions for 280 reference rows" in capsys.readouterr().err
    wrong_field = write_jsonl(tmp_path / "w.jsonl", [{"sql": "SELECT 1"}])
    assert main(["evaluate", "--task", "geoquery_sql", "--predictions", str(wrong_field)]) == 2
    assert f"{wrong_field} line 1: no field 'query'" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
    assert main(["evaluate", "--task", "geoquery_sql"]) == 2
    assert "give the predictions to score" in capsys.readouterr().err


def test_cli_evaluate_spider_takes_db_dir_and_references_and_reports_hardness(tmp_path, capsys):
    task = get_task("spider")
    references = json.loads(task.references_path().read_text())[:30]
    refs = tmp_path / "dev.json"
    refs.write_text(json.dumps(references))
    preds = write_jsonl(tmp_path / "p.jsonl", [{"query": r["query"]} for r in references])
    status = main(["evaluate", "--task", "spider", "--references", str(refs), "--predictions", str(preds),
                   "--db-dir", str(task.packaged / "database"), "--output-dir", str(tmp_path / "o"), "--json"])
    assert status == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["execution_accuracy"] == 1.0
    assert sum(level["count"] for level in result["breakdown"].values()) == 30
    unknown = tmp_path / "unknown.json"
    unknown.write_text(json.dumps([{**references[0], "db_id": "no_such_db"}]))
    assert main(["evaluate", "--task", "spider", "--references", str(unknown), "--predictions", str(preds)]) == 2
    assert f"{unknown} item 1: unknown db_id 'no_such_db'" in capsys.readouterr().err


def test_cli_evaluate_with_a_generator_scores_the_llms_few_shot_answers(tmp_path, capsys, oracle):
    """The loopback TGI server answers half the GeoQuery dev questions with their gold SQL."""
    from tests.llm_servers import LLMServer

    with LLMServer(oracle) as server:
        status = main(["evaluate", "--task", "geoquery_sql", "--generator", f"tgi:{server.url}",
                       "--output-dir", str(tmp_path / "o"), "--json"])
    assert status == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    saved = [json.loads(line) for line in (tmp_path / "o" / "predictions.jsonl").read_text().splitlines()]
    right = sum(r["prediction"] == r["query"] for r in saved)
    assert 0.3 < result["execution_accuracy"] < 0.8 and result["execution_accuracy"] >= right / 280
    metrics = json.loads((tmp_path / "o" / "metrics.json").read_text())
    assert metrics["source"].startswith("generator:tgi:") and metrics["generator"]["demonstrations"] == 10


def test_evaluate_module_loads_offline_and_gives_the_same_metrics():
    import evaluate

    rows = [json.loads(line) for line in get_task("geoquery_sql").references_path().read_text().splitlines()][:40]
    predictions = [row["query"] for row in rows]
    predictions[0] = "SELECT 1"
    metric = evaluate.load(EVALUATE_MODULE, "geoquery_sql")
    result = metric.compute(predictions=predictions, references=[json.dumps(row) for row in rows])
    assert result["execution_accuracy"] == pytest.approx(39 / 40)
    mtop = evaluate.load(EVALUATE_MODULE, "mtop")
    gold = {"question": "weather", "logical_form": "[IN:GET_WEATHER ]"}
    assert mtop.compute(predictions=["[IN:GET_WEATHER ]"], references=[json.dumps(gold)])["exact_match"] == 1.0


def test_references_without_a_packaged_dev_set_must_be_given(tmp_path):
    task = get_task("geoquery_sql")
    knowledge = task.load_knowledge({})
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"question": "q", "db_id": "geography_db"}])
    with pytest.raises(InputError, match=f"{bad} line 1: .*query"):
        task.load_references(bad, knowledge)
