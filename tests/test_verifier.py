"""The agreement-based verifier and the SQLite executor, on the real GeoQuery database."""

from __future__ import annotations

import hashlib
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter

import pytest

from symgen_datasets.errors import InputError

from symgen_datasets.verifiers import (
    EMPTY_RESULT_KEY,
    ExecutionResult,
    SQLiteExecutor,
    distinct_programs,
    is_ordered,
    majority_vote,
    normalize_sql,
    result_keys,
)


@pytest.fixture(scope="module")
def executor():
    with SQLiteExecutor(max_workers=2, timeout_s=1.0) as pool:
        yield pool


def vote(executor, db, candidates, logprobs=None):
    distinct = distinct_programs(candidates, normalize_sql)
    return majority_vote(candidates, executor.execute(db, distinct[0]), logprobs, distinct)


def test_every_geoquery_dev_gold_query_verifies_against_itself(executor, geography_db, geoquery_dev):
    for row in geoquery_dev:
        gold = row["query"]
        candidates = [gold, " ".join(gold.split()) + " ;", gold]
        result = vote(executor, geography_db, candidates)
        assert result.program == normalize_sql(gold), row["question"]
        assert result.votes == 3 and result.num_distinct_results == 1


def test_gold_wins_over_wrong_and_broken_candidates(executor, geography_db, geoquery_dev):
    connection = sqlite3.connect(geography_db)
    checked = 0
    for row, other in zip(geoquery_dev, geoquery_dev[1:] + geoquery_dev[:1]):
        gold, wrong = row["query"], other["query"]
        if Counter(connection.execute(gold).fetchall()) == Counter(connection.execute(wrong).fetchall()):
            continue
        candidates = [wrong, gold, "SELEC nonsense", gold, wrong, gold, "SELECT * FROM no_such_table"]
        result = vote(executor, geography_db, candidates)
        assert result.program == normalize_sql(gold)
        assert (result.votes, result.num_candidates, result.num_executable) == (3, 7, 5)
        assert result.num_distinct_results == 2 and result.cluster_sizes == [3, 2]
        checked += 1
    assert checked > 250


def test_duplicates_anywhere_are_executed_once_and_all_count_as_votes():
    candidates = ["SELECT 1", "SELECT 2", "select 1;", "SELECT  2", "SELECT 1"]
    programs, index = distinct_programs(candidates, normalize_sql)
    assert programs == ["SELECT 1", "SELECT 2", "select 1"]
    assert index == [0, 1, 2, 1, 0]
    ok = ExecutionResult("ok", key="one", num_rows=1)
    two = ExecutionResult("ok", key="two", num_rows=1)
    result = majority_vote(candidates, [ok, two, ok], distinct=(programs, index))
    assert result.votes == 3 and result.program == "SELECT 1"  # most frequent program of the cluster


def test_representative_has_the_highest_mean_logprob():
    candidates = ["SELECT a FROM t", "SELECT t.a FROM t", "SELECT a FROM t"]
    ok = ExecutionResult("ok", key="k", num_rows=1)
    result = majority_vote(candidates, [ok, ok], [-0.9, -0.1, -0.8])
    assert result.program == "SELECT t.a FROM t" and result.logprob == -0.1 and result.votes == 3


def test_cluster_tie_goes_to_the_more_confident_cluster():
    candidates = ["SELECT 1", "SELECT 2", "SELECT 1", "SELECT 2"]
    one, two = ExecutionResult("ok", key="1", num_rows=1), ExecutionResult("ok", key="2", num_rows=1)
    assert majority_vote(candidates, [one, two], [-2.0, -0.2, -2.0, -0.3]).program == "SELECT 2"
    assert majority_vote(candidates, [one, two]).program == "SELECT 1"  # no logprobs: first seen


def test_normalisation_keeps_string_literals():
    assert normalize_sql("SELECT  *\n FROM t WHERE name = 'new  york' ;;") == "SELECT * FROM t WHERE name = 'new  york'"
    assert normalize_sql("SELECT  a FROM t WHERE b = 'x\ty' AND c = \"p q\"") == "SELECT a FROM t WHERE b = 'x\ty' AND c = \"p q\""
    assert normalize_sql("SELECT  a FROM t WHERE b = 'new york'") == "SELECT a FROM t WHERE b = 'new york'"
    assert normalize_sql("SELECT\u00a0a FROM t WHERE b = 'it''s  here' ; ") == "SELECT a FROM t WHERE b = 'it''s  here'"
    assert normalize_sql("SELECT 'unclosed  x") == "SELECT 'unclosed x"


def test_result_key_format_is_stable():
    """Published ``candidate_result`` columns hold these keys: a new version must compute the same,
    for each rule a card can record (columns in any order, and in order before 0.2)."""
    assert result_keys([], ordered=False) == EMPTY_RESULT_KEY == "c018019b6a8b01ab5868cf4be8db327a7549ae03202548b9ffcd2671c4c2b624"
    legacy = {"columns_ordered": True}
    assert result_keys([(1, "a", None)], ordered=False, **legacy) == "10bc0afae6a5eb9f28bcb9e88e132dff15745eb1e58191be2e4b3296d33a319e"
    assert result_keys([(2, 1.5), (1, 2.0)], ordered=False, **legacy) == "0bb8b0f326ce2ea25d49b5aca6299bc520052cb160935a2370f00acb5406a403"
    assert result_keys([(2, 1.5), (1, 2.0)], ordered=True, **legacy) == "3f8be8d9d237c01a33cac0f5216fd63a5faf24f8779b6db5d966907393fd333e"
    assert result_keys([("é\u00ff", b"\x00x", 0.1 + 0.2)], ordered=False, **legacy) == "c7517a6e09172bb80d3556d9b6f2cbf953d3e947538964c1aff2f5e5b730e2e8"
    assert result_keys([(1, "a", None)], ordered=False) == "29d55be20115f5d81c3f9c56adfff2a72badbccd6ca089c51beead28abf0cbc8"
    assert result_keys([(2, 1.5), (1, 2.0)], ordered=False) == "0bb8b0f326ce2ea25d49b5aca6299bc520052cb160935a2370f00acb5406a403"
    assert result_keys([(2, 1.5), (1, 2.0)], ordered=True) == "8a98d953e4597ab3b29370568a8bdd3a773e198589e14cc578f5db770ecca979"


def test_results_equal_up_to_a_column_permutation_agree():
    """Spider's result_eq and SymGen's: SELECT a, b and SELECT b, a agree, in bags and sequences."""
    assert result_keys([(1, "x"), (2, "y")], False) == result_keys([("y", 2), ("x", 1)], False)
    assert result_keys([(1, "x"), (2, "y")], True) == result_keys([("x", 1), ("y", 2)], True)
    assert result_keys([(1, "x"), (2, "y")], True) != result_keys([("y", 2), ("x", 1)], True)  # rows out of order
    # columns with the same values but paired otherwise are no permutation of each other
    assert result_keys([(1, 2), (2, 1)], False) != result_keys([(1, 1), (2, 2)], False)
    assert result_keys([(1, 2, 3), (2, 1, 3)], False) == result_keys([(3, 1, 2), (3, 2, 1)], False)
    assert result_keys([(1, "x")], False, columns_ordered=True) != result_keys([("x", 1)], False, columns_ordered=True)
    # exhaustive against the official evaluator's search on small random results
    import random

    from symgen_datasets.metrics.sql import results_match

    rng = random.Random(3)
    for _ in range(400):
        width, height = rng.randint(1, 4), rng.randint(1, 4)
        a = [tuple(rng.randint(0, 2) for _ in range(width)) for _ in range(height)]
        perm = rng.sample(range(width), width)
        b = [tuple(row[j] for j in perm) for row in a] if rng.random() < 0.5 else \
            [tuple(rng.randint(0, 2) for _ in range(width)) for _ in range(height)]
        rng.shuffle(b)
        assert (result_keys(a, False) == result_keys(b, False)) == results_match(a, b, order_matters=False), (a, b)


def test_sql_verifier_votes_across_column_orders_under_each_empty_result_policy():
    from symgen_datasets.tasks import get_task
    from symgen_datasets.verifiers.sqlite import DEFAULT_EMPTY_RESULTS

    task = get_task("geoquery_sql")
    nothing = ["SELECT state_name FROM state WHERE population < 0", "SELECT city_name FROM city WHERE 0",
               "SELECT river_name FROM river WHERE length < 0"]  # three agreeing empty results
    right = ["SELECT state_name, capital FROM state WHERE state_name = 'texas'",
             "SELECT capital, state_name FROM state WHERE state_name = 'texas'"]  # one result, two column orders
    candidates = [*nothing, *right]
    # reject: the empty result out-votes the other cluster, so nothing is kept; abstain: the empty
    # results are no votes, so the 2-vote cluster wins; agree: the empty result wins with 3
    for policy, program, votes in (("reject", None, 0), ("abstain", right[0], 2), ("agree", nothing[0], 3), (None, None, 0)):
        knowledge = task.load_knowledge(task.options_with_defaults({"empty_results": policy} if policy else {}))
        policy = policy or DEFAULT_EMPTY_RESULTS
        try:
            with task.make_verifier(knowledge, 5.0) as verifier:
                assert verifier.provenance() == {"result_key": "columns-unordered", "empty_results": policy}
                programs, index = distinct_programs(candidates, verifier.normalize)
                outcomes = verifier.execute(verifier.context({"db_id": "geography_db"}), programs)
                result = majority_vote(candidates, outcomes, None, (programs, index), verifier.cluster_labels(outcomes, index),
                                       verifier.barred_labels)
        finally:
            knowledge.cleanup()
        assert (result.program, result.votes, result.num_executable) == (program, votes, 5), policy
        assert result.num_distinct_results == (1 if policy == "abstain" else 2)
    with pytest.raises(InputError, match="--empty-results 'never'"):
        task.options_with_defaults({"empty_results": "never"})


def test_equality_rule_bag_unless_ordered_with_several_rows():
    assert result_keys([(1,), (2,)], ordered=False) == result_keys([(2,), (1,)], ordered=False)
    assert result_keys([(1,), (2,)], ordered=True) != result_keys([(2,), (1,)], ordered=True)
    assert result_keys([(1,), (2,)], ordered=True) != result_keys([(1,), (2,)], ordered=False)
    assert result_keys([(1,)], ordered=True) == result_keys([(1,)], ordered=False)
    assert result_keys([(1.0, 0.1 + 0.2)], ordered=False) == result_keys([(1, 0.3)], ordered=False)
    assert result_keys([(1, 1)], ordered=False) != result_keys([(1, 1), (1, 1)], ordered=False)
    assert is_ordered("SELECT a FROM t ORDER BY a DESC LIMIT 3")
    assert not is_ordered("SELECT a FROM t WHERE a IN (SELECT b FROM u ORDER BY b LIMIT 1)")


def test_hostile_candidates_change_nothing_and_stop_within_their_limit(executor, geography_db, tmp_path):
    """Generated code is hostile: writes, ATTACH of a new file, PRAGMAs, extension loading, a
    never-ending recursive CTE, a cross join of every table and a gigabyte blob."""
    before = hashlib.sha256(geography_db.read_bytes()).hexdigest()
    files_before = sorted(p.name for p in geography_db.parent.iterdir())
    new_file = tmp_path / "new.db"
    every_table = ", ".join(["border_info", "city", "highlow", "lake", "mountain", "river", "state"])
    denied = [
        "DROP TABLE state",
        "INSERT INTO state (state_name) VALUES ('atlantis')",
        "UPDATE city SET population = 0",
        "DELETE FROM river",
        "CREATE TABLE pwned (x)",
        "SELECT 1; DROP TABLE river",
        f"ATTACH DATABASE '{new_file}' AS evil",
        "PRAGMA journal_mode = WAL",
        "PRAGMA writable_schema = ON",
        "SELECT load_extension('/tmp/evil.so')",
        "BEGIN IMMEDIATE",
        "SELECT length(randomblob(1000000000))",
    ]
    slow = [
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c",
        f"SELECT count(*) FROM {every_table}",
    ]
    for query in denied + slow:
        start = time.monotonic()
        [outcome] = executor.execute(geography_db, [query])
        elapsed = time.monotonic() - start
        assert outcome.status == ("timeout" if query in slow else "error"), (query, outcome)
        assert elapsed < executor.timeout_s + 2.0, (query, elapsed)  # stopped within its limit
    assert hashlib.sha256(geography_db.read_bytes()).hexdigest() == before
    assert sorted(p.name for p in geography_db.parent.iterdir()) == files_before
    assert not new_file.exists() and list(tmp_path.iterdir()) == []
    assert executor.execute(geography_db, ["SELECT count(*) FROM state"])[0].ok  # the worker survived


def _pool_workers(pid: int) -> list[int]:
    """Child processes of ``pid`` but its multiprocessing resource tracker (callers subtract the
    children that existed before their pool)."""
    workers = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as handle:
            for child in handle.read().split():
                with open(f"/proc/{child}/cmdline", "rb") as cmdline:
                    if b"resource_tracker" not in cmdline.read():
                        workers.append(int(child))
    return workers


def test_a_worker_killed_mid_batch_costs_no_other_query(geography_db):
    """kill -9 of the worker running a batch: the batch is re-run one query per task in fresh
    workers, so every other query still gets its real outcome."""
    never_ends = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c"
    others = set(_pool_workers(os.getpid()))
    with SQLiteExecutor(max_workers=1, timeout_s=2.0) as pool:
        pool.execute(geography_db, ["SELECT 1"])  # the worker is up
        workers = [pid for pid in _pool_workers(os.getpid()) if pid not in others]
        assert len(workers) == 1
        killer = threading.Timer(0.5, lambda: [os.kill(pid, signal.SIGKILL) for pid in workers])
        killer.start()
        outcomes = pool.execute(geography_db, ["SELECT count(*) FROM state", never_ends, "SELECT count(*) FROM river"])
        killer.join()
    assert [o.status for o in outcomes] == ["ok", "timeout", "ok"]


def test_workers_killed_while_idle_are_replaced(geography_db):
    others = set(_pool_workers(os.getpid()))
    with SQLiteExecutor(max_workers=2, timeout_s=2.0) as pool:
        assert pool.execute(geography_db, ["SELECT 1"])[0].ok
        for pid in set(_pool_workers(os.getpid())) - others:
            os.kill(pid, signal.SIGKILL)
        time.sleep(0.5)
        assert [o.status for o in pool.execute(geography_db, ["SELECT count(*) FROM city", "SELEC"])] == ["ok", "error"]


def test_missing_database_is_an_error_outcome(executor, tmp_path):
    [outcome] = executor.execute(tmp_path / "nope.sqlite", ["SELECT 1"])
    assert outcome.status == "error" and "nope.sqlite" in outcome.error
    assert not (tmp_path / "nope.sqlite").exists()


def test_executor_works_from_code_without_a_main_file(geography_db):
    """Workers must not re-import the caller's __main__ (a script without a main guard, stdin)."""
    code = (
        "from symgen_datasets.verifiers import SQLiteExecutor\n"
        "with SQLiteExecutor(max_workers=1) as pool:\n"
        f"    print(pool.execute({str(geography_db)!r}, ['SELECT count(*) FROM state'])[0].status)\n"
    )
    result = subprocess.run([sys.executable, "-"], input=code, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]


def test_text_that_is_not_utf8_is_replaced_not_an_error(executor, tmp_path):
    db = tmp_path / "latin1" / "latin1.sqlite"
    db.parent.mkdir()
    with sqlite3.connect(db) as connection:
        connection.execute("CREATE TABLE city (name TEXT)")
        connection.execute("INSERT INTO city VALUES (CAST(X'4dfc6e6368656e' AS TEXT)), ('Berlin')")  # Latin-1 "München"
    connection.close()
    bad, good = executor.execute(db, ["SELECT name FROM city WHERE name LIKE 'M%'", "SELECT name FROM city WHERE name = 'Berlin'"])
    assert bad.status == "ok" and bad.key == result_keys([("M\ufffdnchen",)], ordered=False)
    assert good.status == "ok" and good.key == result_keys([("Berlin",)], ordered=False)


def test_execute_stream_runs_ahead_and_answers_in_job_order(geography_db, tmp_path):
    """Jobs are read lazily (results come back before the last job is read), queries of several
    databases share tasks, and every job gets its results in its own order."""
    other = tmp_path / "numbers" / "numbers.sqlite"
    other.parent.mkdir()
    with sqlite3.connect(other) as connection:
        connection.execute("CREATE TABLE n (v INTEGER)")
        connection.executemany("INSERT INTO n VALUES (?)", [(v,) for v in range(100)])
    connection.close()
    read = []

    def jobs():
        for job in range(300):
            read.append(job)
            db = geography_db if job % 2 else other
            table = "state" if job % 2 else "n"
            yield db, [f"SELECT {job}, {position}, count(*) FROM {table}" for position in range(1 + job % 4)]

    with SQLiteExecutor(max_workers=2) as pool:
        pool.chunk_programs, pool.tasks_per_worker = 8, 2
        stream = pool.execute_stream(jobs())
        first = next(stream)
        assert first == [ExecutionResult("ok", result_keys([(0, 0, 100)], False), 1)] and len(read) < 300
        results = [first, *stream]
    assert len(results) == 300 and len(read) == 300
    for job, outcomes in enumerate(results):
        count = 51 if job % 2 else 100
        assert [o.key for o in outcomes] == [result_keys([(job, position, count)], False) for position in range(1 + job % 4)]


def test_a_fuzzy_bash_cluster_is_represented_by_its_most_sampled_member():
    """A BLEU cluster holds the right command and its corruptions; the corruption the model was
    most confident about must not represent it (the review's NL2Bash rows were 75% gold). Exact
    clusters (SQL) keep the most confident member."""
    from symgen_datasets.tasks import get_task

    task = get_task("nl2bash")
    gold = "find . -name '*.txt' -type f -mtime -7"
    dropped = "find . -name '*.txt' -type f -7"  # one token dropped
    swapped = "find . -name '*.txt' -type f -7 -mtime"  # two tokens swapped
    candidates = [gold, dropped, gold, swapped, gold, gold]
    logprobs = [-0.9, -0.1, -0.8, -0.3, -0.7, -0.95]
    with task.make_verifier(task.load_knowledge(task.options_with_defaults({}))) as verifier:
        programs, index = distinct_programs(candidates, verifier.normalize)
        outcomes = verifier.execute(None, programs)
        labels = verifier.cluster_labels(outcomes, index)
        assert len(set(labels)) == 1  # one fuzzy cluster of 6 votes
        vote = majority_vote(candidates, outcomes, logprobs, (programs, index), labels, verifier.barred_labels,
                             verifier.representative)
        assert verifier.representative == "support"
    assert (vote.program, vote.votes) == (gold, 6)
    former = majority_vote(candidates, outcomes, logprobs, (programs, index), labels, verifier.barred_labels, "logprob")
    assert former.program == dropped  # the former rule kept the corruption
    assert get_task("geoquery_sql").verifier_class.representative == "logprob"
