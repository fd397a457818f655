"""`symgen calibrate`: yield and precision for every V, measured against gold on real dev data."""

from __future__ import annotations

import json
import sqlite3
from collections import Counter

import pytest

from symgen_datasets.cli import main
from symgen_datasets.pipeline.calibrate import table_points
from symgen_datasets.tasks import get_task
from tests.llm_servers import LLMServer, OracleResponder


def test_table_points_counts_kept_and_correct_for_every_v():
    points = table_points([3, 1, 0, 2, 3], [True, False, False, False, True], 3)
    assert [(p.min_votes, p.kept, p.correct) for p in points] == [(1, 4, 2), (2, 3, 2), (3, 2, 2)]
    assert points[0].yield_ == 0.8 and points[0].precision == 0.5 and points[0].correct_share == 0.4
    assert table_points([0, 0], [False, False], 2)[1].precision is None


def test_calibrate_scores_winners_against_gold_and_reruns_from_the_cache(tmp_path, geoquery_dev, geography_db):
    """40 real GeoQuery-SQL dev questions, an LLM right half the time, K=6: every figure of the
    table is recomputed here from the published candidates by executing them against gold."""
    dev = geoquery_dev[:40]
    questions = tmp_path / "dev40.jsonl"
    questions.write_text("".join(json.dumps(row) + "\n" for row in dev))
    gold = {row["question"].strip(): row["query"] for row in geoquery_dev}
    out = tmp_path / "calibration"
    with LLMServer(OracleResponder(gold, accuracy=0.5)) as server:
        argv = ["calibrate", "geoquery_sql", "--questions", str(questions), "--generator", f"tgi:{server.url}",
                "--num-samples", "6", "--output-dir", str(out), "--json"]
        assert main(argv) == 0
        answers = [seen for seen in server.seen if seen["parameters"].get("max_new_tokens", 0) > 1]
        assert len(answers) == 40 * 6
        assert main([*argv, "--empty-results", "agree"]) == 0  # another rule: the cached responses, no request
        assert len([seen for seen in server.seen if seen["parameters"].get("max_new_tokens", 0) > 1]) == 40 * 6

    record = json.loads((out / "calibration.json").read_text())
    assert (out / "calibration.png").stat().st_size > 5_000 and "| V (--min-votes) |" in (out / "calibration.md").read_text()
    assert record["verifier"]["empty_results"] == "agree" and record["num_questions"] == 40
    assert [p["min_votes"] for p in record["points"]] == [1, 2, 3, 4, 5, 6]

    # recompute every figure from the published per-question candidates: vote and score by executing them
    connection = sqlite3.connect(f"file:{geography_db}?mode=ro", uri=True)

    def result(query: str):
        try:
            return Counter(connection.execute(query).fetchall())
        except sqlite3.Error:
            return None

    rows = [json.loads(line) for line in (out / "questions.jsonl").read_text().splitlines()]
    assert [r["question"] for r in rows] == [r["question"] for r in dev]
    votes, correct, first_correct = [], [], 0
    for row in rows:
        gold_result = result(row["query"])
        first_correct += result(row["candidates"][0]) == gold_result
        clusters = Counter()
        for candidate in row["candidates"]:
            found = result(candidate) if candidate else None  # "": nothing extracted, never a vote
            if found is not None:
                clusters[json.dumps(sorted(map(repr, found.elements())))] += 1
        votes.append(max(clusters.values(), default=0))
        correct.append(row["winner"] is not None and result(row["winner"]) == gold_result)
    assert [r["votes"] for r in rows] == votes and [r["correct"] for r in rows] == correct
    assert record["first_candidate_accuracy"] == pytest.approx(first_correct / 40)
    for point in record["points"]:
        kept = [ok for n, ok in zip(votes, correct) if n >= point["min_votes"]]
        assert (point["kept"], point["correct"]) == (len(kept), sum(kept)), point
    assert record["points"][2]["precision"] > record["first_candidate_accuracy"]  # the verifier helps at V=3


def test_calibrate_needs_labelled_questions(tmp_path, capsys):
    assert main(["calibrate", "geoquery_sql", "--generator", "tgi:http://127.0.0.1:9", "--output-dir",
                 str(tmp_path / "c")]) == 2
    assert "needs labelled questions: give --questions FILE" in capsys.readouterr().err


def test_an_embedded_run_says_how_far_its_rows_can_be_trusted():
    """The packaged calibration of the embedded model is what the end of an embedded run prints."""
    from symgen_datasets.publish.summary import EMBEDDED_CALIBRATION, embedded_calibration

    task = get_task("geoquery_sql")
    record = json.loads((task.packaged / EMBEDDED_CALIBRATION).read_text())
    point = next(p for p in record["points"] if p["min_votes"] == 3)
    assert point["kept"] > 0 and record["num_questions"] == 40
    line = embedded_calibration(task, 3)
    assert line.startswith(f"{point['precision']:.0%} of kept rows correct at V=3 (K={record['num_samples']}, 40 real dev")
    assert "a demo model" in line
    assert embedded_calibration(get_task("nl2bash"), 3) is None  # no calibration shipped: no claim
