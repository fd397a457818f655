"""Peak memory of ``symgen generate`` as the number of questions grows.

Runs the real command (``python -m symgen_datasets.cli generate geoquery_sql --questions FILE``)
twice in fresh processes, on N and 10 N questions (GeoQuery-SQL dev questions, repeated), against
a loopback TGI-protocol server in its own process that answers at once. Each run reports the peak
resident set size (``ru_maxrss``) of the command's own process and of its SQL worker processes.

Printed: both peaks, the growth ratio, and the same for the private memory (``RssAnon``, sampled
every 50 ms; RSS also counts the pages of memory-mapped files: libraries, and any Arrow file
opened as a ``datasets.Dataset``, which the command avoids). Target:
the command's peak RSS grows < 10% from 10k to 100k questions (answers are streamed to Arrow
files; no stage holds all candidates in memory).

Usage: python benchmarks/memory.py [--questions 10000] [--factor 10] [--num-samples 2]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from symgen_datasets.tasks import get_task  # noqa: E402
from tests.llm_servers import LLMServer  # noqa: E402

#: runs the CLI in this process, then prints its peak RSS and its children's (kB, Linux)
RUN_AND_MEASURE = """
import json, resource, sys, threading, time
from symgen_datasets.cli import main
anon = [0]
def sample():  # RssAnon: private memory, without the file pages that memory maps keep resident
    while True:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("RssAnon:"):
                    anon[0] = max(anon[0], int(line.split()[1]))
        time.sleep(0.05)
threading.Thread(target=sample, daemon=True).start()
status = main(sys.argv[1:])
print(json.dumps({"status": status,
                  "self_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                  "anon_kb": anon[0],
                  "workers_kb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))
"""


def answer(prompt, parameters, seed):
    """Two plausible programs, chosen by the seed (so there is something to vote on)."""
    return ("SELECT count(*) FROM state\n\n" if seed % 3 else "SELECT state_name FROM state\n\n"), [-0.1, -0.2]


def serve(urls, stop) -> None:
    with LLMServer(answer, record=False) as server:
        urls.put(server.url)
        stop.wait()


def run(url: str, questions: list[dict], count: int, folder: Path, num_samples: int) -> dict:
    path = folder / f"questions-{count}.jsonl"
    with path.open("w") as handle:
        for i in range(count):
            handle.write(json.dumps(questions[i % len(questions)]) + "\n")
    command = [
        sys.executable, "-c", RUN_AND_MEASURE, "generate", "geoquery_sql", "--questions", str(path),
        "--generator", f"tgi:{url}", "--num-samples", str(num_samples), "--min-votes", "1",
        "--concurrency", "64", "--output", str(folder / f"out-{count}"),
    ]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0:
        raise SystemExit(f"symgen generate failed on {count} questions:\n{done.stderr[-3000:]}")
    measured = json.loads(done.stdout.strip().splitlines()[-1])
    measured["seconds"] = time.perf_counter() - start
    return measured


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=10_000, help="N: questions of the small run")
    parser.add_argument("--factor", type=int, default=10, help="the large run has factor * N questions")
    parser.add_argument("--num-samples", type=int, default=2, help="K: candidates per question")
    args = parser.parse_args()
    dev = [json.loads(line) for line in get_task("geoquery_sql").references_path().read_text().splitlines()]
    questions = [{"question": q["question"], "db_id": q["db_id"]} for q in dev]

    context = multiprocessing.get_context("spawn")
    urls, stop = context.Queue(), context.Event()
    server = context.Process(target=serve, args=(urls, stop), daemon=True)
    server.start()
    try:
        url = urls.get(timeout=120)
        results = {}
        with tempfile.TemporaryDirectory() as folder:
            for count in (args.questions, args.questions * args.factor):
                results[count] = measured = run(url, questions, count, Path(folder), args.num_samples)
                print(f"{count:>7} questions x {args.num_samples} candidates: {measured['seconds']:.0f}s, "
                      f"peak RSS {measured['self_kb'] / 1024:.0f} MiB, of which private (RssAnon) "
                      f"{measured['anon_kb'] / 1024:.0f} MiB (SQL workers {measured['workers_kb'] / 1024:.0f} MiB)")
    finally:
        stop.set()
        server.join(timeout=10)
    small, large = results[args.questions], results[args.questions * args.factor]
    growth = large["self_kb"] / small["self_kb"] - 1
    private = large["anon_kb"] / small["anon_kb"] - 1
    print(f"growth from {args.questions} to {args.questions * args.factor} questions: peak RSS {growth:+.1%}, "
          f"private memory (RssAnon) {private:+.1%}")
    print(f"target (< 10%): {'met' if growth < 0.10 else 'NOT met'}")
    return 0 if growth < 0.10 else 1


if __name__ == "__main__":
    sys.exit(main())
