"""Wall-clock time of a default `symgen s3` run on the CPU (the second review's case).

A 2-round GeoQuery-SQL run with 40 questions and 5 training steps per round, the embedded
SmolLM2-135M as the task model, everything else at its default: answered by a loopback
TGI-protocol server right 80% of the time; validation: the first 20 real dev questions; test:
the packaged dev set without them (260 rows). Printed: the run's wall-clock time, and what it
printed about evaluation (the estimate before round 0 and the measured rate per round).

Usage: python benchmarks/s3_cpu_time.py [--output-dir DIR] [-- extra s3 flags]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from symgen_datasets.tasks import get_task  # noqa: E402
from tests.llm_servers import LLMServer, OracleResponder  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output-dir", default=None)
    args, extra = parser.parse_known_args()
    dev = [json.loads(line) for line in get_task("geoquery_sql").references_path().read_text().splitlines()]
    root = Path(args.output_dir or tempfile.mkdtemp(prefix="s3-cpu-"))
    shutil.rmtree(root / "run", ignore_errors=True)
    root.mkdir(parents=True, exist_ok=True)
    (root / "validation.jsonl").write_text("".join(json.dumps(r) + "\n" for r in dev[:20]))
    oracle = OracleResponder({r["question"]: r["query"] for r in dev}, accuracy=0.8,
                             questions=[r["question"] for r in dev[20:]])
    with LLMServer(oracle, record=False) as server:
        command = [sys.executable, "-m", "symgen_datasets.cli", "s3", "geoquery_sql", "--validation",
                   str(root / "validation.jsonl"), "--rounds", "2", "--generator", f"tgi:{server.url}",
                   "--num-questions", "40", "--output-dir", str(root / "run"), *[e for e in extra if e != "--"],
                   "--max-steps", "5"]
        started = time.monotonic()
        done = subprocess.run(command, capture_output=True, text=True)
        seconds = time.monotonic() - started
    notes = [line for line in done.stderr.splitlines() if line.startswith(("symgen s3: evaluation", "round "))
             and ("predicted" in line or "evaluation" in line)]
    print("\n".join(notes))
    print(done.stdout[-1500:])
    print(f"exit {done.returncode}; wall-clock {seconds / 60:.1f} min ({seconds:.0f} s)")
    if done.returncode:
        print(done.stderr[-3000:], file=sys.stderr)
    return done.returncode


if __name__ == "__main__":
    sys.exit(main())
