"""Verification throughput on the real Spider dev databases, 20 candidates per question.

Three ways to verify the same candidates, measured in one run on this machine:

* baseline, SymGen's procedure: a process pool with one task per candidate (each task opens the
  database, executes the query and sends the rows back), a 5 s timeout per candidate, then an
  execution-result vote in the parent;
* symgen-datasets: the pipeline's verification and selection stages as ``symgen generate`` runs
  them, on the run's database snapshots (taken before the clock, as a run takes them before its
  first request; ``verify_stream`` over ``SQLiteExecutor.execute_stream``: each distinct program
  executed once, many programs per pool task, connections cached per worker, results reduced to
  a key in the worker, deduplication and votes in the parent while the workers execute);
* lower bound: the sum of the raw SQLite execution times of the distinct programs (execute and
  fetch, ``fetch_rows``; one process, one connection per database, no pool), divided by the
  number of cores.

The candidates are real SQL: for each of the 972 dev questions on databases present, the gold
query (several times, as a model that is often right), other gold queries of the same database,
and broken variants; drawn with a fixed seed. Both verifiers must keep the same questions.

Pools are started before and stopped after the clock (a run starts and stops its pool once,
whatever its size), so the figures compare the work of verifying. Each method runs ``--repeat``
times (default 3), interleaved, and its fastest run counts, as ``timeit`` does: a busy machine
only ever slows a run down, and a single run per method let the ratio wander by +-25% here.

Targets: symgen >= 3x the baseline's throughput with identical kept sets; within 2x of the lower
bound.

Usage: python benchmarks/verification_throughput.py [--spider DIR] [--questions N]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import sqlite3
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from symgen_datasets.pipeline.stages import StageContext, select, verify_stream  # noqa: E402
from symgen_datasets.tasks import get_task  # noqa: E402
from symgen_datasets.verifiers import SQLiteVerifier, distinct_programs, normalize_sql  # noqa: E402
from symgen_datasets.verifiers.sqlite import decode_text, fetch_rows, is_ordered, result_keys  # noqa: E402

K, V = 20, 5


def candidates_for(questions: list[dict], seed: int = 0) -> list[list[str]]:
    """20 candidates per question: gold 4-14 times, other queries of the same database, broken SQL."""
    rng = random.Random(seed)
    by_db: dict[str, list[str]] = {}
    for q in questions:
        by_db.setdefault(q["db_id"], []).append(q["query"])
    out = []
    for q in questions:
        gold = q["query"]
        right = rng.randint(4, 14)
        others = [x for x in by_db[q["db_id"]] if x != gold] or [gold]
        wrong = [rng.choice(others) if rng.random() < 0.7 else gold.replace("SELECT", "SELEC", 1) for _ in range(K - right)]
        items = [gold] * right + wrong
        rng.shuffle(items)
        out.append(items)
    return out


# --- baseline: SymGen's procedure -------------------------------------------------------------

def _baseline_execute(db_path: str, query: str):
    connection = sqlite3.connect(db_path)
    connection.text_factory = decode_text
    try:
        return connection.execute(query).fetchall()
    finally:
        connection.close()


def baseline(questions, candidates, db_dir: Path) -> tuple[float, set]:
    kept = set()
    with multiprocessing.get_context("fork").Pool(os.cpu_count()) as pool:
        pool.apply(_baseline_execute, (str(db_dir / questions[0]["db_id"] / f"{questions[0]['db_id']}.sqlite"), "SELECT 1"))
        start = time.perf_counter()
        jobs = [
            [pool.apply_async(_baseline_execute, (str(db_dir / q["db_id"] / f"{q['db_id']}.sqlite"), c)) for c in cands]
            for q, cands in zip(questions, candidates)
        ]
        for index, (q, cands, results) in enumerate(zip(questions, candidates, jobs)):
            keys = []
            for candidate, job in zip(cands, results):
                try:
                    rows = job.get(timeout=5)
                except Exception:  # noqa: BLE001 - failed or timed out: no vote
                    continue
                keys.append(result_keys(rows, is_ordered(candidate)))
            if keys and Counter(keys).most_common(1)[0][1] >= V:
                kept.add(index)
        seconds = time.perf_counter() - start
    return seconds, kept


# --- symgen-datasets --------------------------------------------------------------------------

def symgen(questions, candidates, db_dir: Path) -> tuple[float, set]:
    task = get_task("spider")
    databases = task.databases(db_dir)
    databases.prepare({"db_id": q["db_id"]} for q in questions)  # snapshots, as `symgen generate` takes them before its first request
    with SQLiteVerifier(databases, timeout_s=5.0) as verifier:
        context = StageContext(task=task, knowledge=databases, verifier=verifier)
        verifier.executor.execute(db_dir / questions[0]["db_id"] / f"{questions[0]['db_id']}.sqlite", ["SELECT 1"])  # workers up
        start = time.perf_counter()
        rows = (
            {"question_index": i, "db_id": q["db_id"], "candidates": c, "candidate_logprobs": [None] * len(c)}
            for i, (q, c) in enumerate(zip(questions, candidates))
        )
        kept = {row["question_index"] for row in verify_stream(context, rows) if select({"votes": [row["votes"]]}, V)[0]}
        seconds = time.perf_counter() - start
    return seconds, kept


def lower_bound(questions, candidates, db_dir: Path) -> float:
    connections: dict[str, sqlite3.Connection] = {}
    total = 0.0
    for q, cands in zip(questions, candidates):
        connection = connections.get(q["db_id"])
        if connection is None:
            connection = connections[q["db_id"]] = sqlite3.connect(db_dir / q["db_id"] / f"{q['db_id']}.sqlite")
            connection.text_factory = decode_text
        for program in distinct_programs(cands, normalize_sql)[0]:
            start = time.perf_counter()
            try:
                fetch_rows(connection, program, 10_000)
            except sqlite3.Error:
                pass
            total += time.perf_counter() - start
    return total / (os.cpu_count() or 1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spider", type=Path, default=ROOT.parent / "shared" / "data" / "spider",
                        help="folder with Spider's dev.json and database/")
    parser.add_argument("--questions", type=int, default=0, help="use only the first N questions (0: all)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each method; the fastest counts (default: 3)")
    args = parser.parse_args()
    db_dir = args.spider / "database"
    dev = json.loads((args.spider / "dev.json").read_text())
    questions = [q for q in dev if (db_dir / q["db_id"] / f"{q['db_id']}.sqlite").is_file()]
    if args.questions:
        questions = questions[: args.questions]
    candidates = candidates_for(questions)
    total = sum(len(c) for c in candidates)
    print(f"Spider dev: {len(questions)} questions, {total} candidates ({K} per question), V={V}, {os.cpu_count()} cores")

    # each method runs --repeat times, interleaved, and its fastest run counts (as timeit does):
    # a busy machine only ever slows a run down
    bounds, ours_runs, base_runs = [], [], []
    for _ in range(args.repeat):
        bounds.append(lower_bound(questions, candidates, db_dir))
        ours_runs.append(symgen(questions, candidates, db_dir))
        base_runs.append(baseline(questions, candidates, db_dir))
    bound = min(bounds)
    ours, ours_kept = min(ours_runs, key=lambda run: run[0])
    base, base_kept = min(base_runs, key=lambda run: run[0])
    print(f"{'method':<44} {'seconds':>8} {'candidates/s':>13}")
    print(f"{'baseline: SymGen procedure (task per candidate)':<44} {base:>8.2f} {total / base:>13.0f}")
    print(f"{'symgen-datasets verify + select stages':<44} {ours:>8.2f} {total / ours:>13.0f}")
    print(f"{'lower bound: raw SQLite time / cores':<44} {bound:>8.2f} {total / bound:>13.0f}")
    same = ours_kept == base_kept and all(kept == ours_kept for _, kept in ours_runs + base_runs)
    print(f"kept questions: symgen {len(ours_kept)}, baseline {len(base_kept)}, identical: {same}")
    speedup, overhead = base / ours, ours / bound
    print(f"speed-up over baseline: {speedup:.2f}x (target >= 3x); symgen / lower bound: {overhead:.2f}x (target <= 2x)")
    met = same and speedup >= 3 and overhead <= 2
    print(f"targets: {'met' if met else 'NOT met'}")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
