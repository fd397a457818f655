"""GeoQuery verification throughput: the Prolog verifier against a plain single-process loop.

The 880 GeoQuery gold queries (SymGen's train and dev files), each as 10 candidates with its
variables renamed ten ways (10 distinct texts, one answer): 8,800 queries. Measured in this
process, one after the other:

* baseline: one SWI-Prolog process answering every query in turn (the engine's server loop,
  no pool: what a plain evaluation script does);
* the verifier: ``PrologVerifier.execute_stream`` (one engine per worker process, consulted once,
  one job of 10 candidates per question).

Printed: queries per second of each and their ratio, and that both gave the same answers.

Usage: python benchmarks/geoquery_throughput.py [--data-dir DIR] [--timeout 5] [--candidates 10]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from symgen_datasets.tasks import get_task  # noqa: E402
from symgen_datasets.verifiers.prolog import STACK_LIMIT, swipl  # noqa: E402
from tests.llm_servers import rename_variables  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared" / "data" / "symgen" / "geoquery")
    parser.add_argument("--timeout", type=float, default=5.0)
    parser.add_argument("--candidates", type=int, default=10)
    args = parser.parse_args()
    gold = [json.loads(line)["prolog"] for name in ("train.json", "dev.json")
            for line in (args.data_dir / name).read_text().splitlines() if line.strip()]
    jobs = [[rename_variables(query, shift=k) for k in range(args.candidates)] for query in gold]
    queries = [q for job in jobs for q in job]
    task = get_task("geoquery")
    knowledge = task.load_knowledge(task.options_with_defaults({}))
    files = knowledge.files

    started = time.perf_counter()
    loop = subprocess.run([swipl(), f"--stack-limit={STACK_LIMIT}", "-q", files.server, "--", files.geobase,
                           files.library, f"{args.timeout:g}"], input="".join(q + "\n" for q in queries),
                          capture_output=True, text=True)
    baseline_s = time.perf_counter() - started
    baseline = [line.split("\t", 1) for line in loop.stdout.splitlines()[1:]]

    started = time.perf_counter()
    with task.make_verifier(knowledge, timeout_s=args.timeout) as verifier:
        outcomes = [o for batch in verifier.execute_stream((None, job) for job in jobs) for o in batch]
        workers = verifier._pool.max_workers
    verifier_s = time.perf_counter() - started

    same = sum((kind == "ok") == o.ok and (kind != "ok" or text == o.key) for (kind, text), o in zip(baseline, outcomes))
    print(f"{len(gold)} gold queries x {args.candidates} candidates = {len(queries)} queries, time limit {args.timeout:g} s")
    print(f"  single-process SWI-Prolog loop   {len(queries) / baseline_s:8.1f} queries/s ({baseline_s:.1f} s)")
    print(f"  PrologVerifier ({workers} workers)         {len(queries) / verifier_s:8.1f} queries/s ({verifier_s:.1f} s)")
    print(f"  ratio {baseline_s / verifier_s:.2f}x; the same outcome for {same} of {len(queries)} queries")
    return 0


if __name__ == "__main__":
    sys.exit(main())
