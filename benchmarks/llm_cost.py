"""What an LLM bills for a dataset: the 280 GeoQuery-SQL dev questions at K=20, V=5, through a
loopback server right half the time (tests.llm_servers.OracleResponder) that reports the tokens
it bills: each request's prompt once, every returned choice.

Three ways to sample the same candidates, in one run on this machine:

* ``openai, n``: an OpenAI-compatible server that takes ``n`` (vLLM, SGLang, OpenAI): a
  question's 20 candidates in one request, its prompt billed once (the default);
* ``openai, one per candidate``: the same server ignoring ``n``: 20 requests per question, the
  prompt billed 20 times (SymGen's procedure, and what this project did before);
* ``tgi``: TGI's ``/generate`` has no ``n``: one request per candidate.

For each it prints requests, billed prompt and completion tokens (from the run's bill: the
server's ``usage``, or the tokenizer's count for TGI's prompts), tokens per kept row, precision
of the kept rows against gold (by execution) and yield, and the saving against one request per
candidate. Adaptive voting is not in this version of the benchmark.

Usage: python benchmarks/llm_cost.py [--num-samples 20] [--min-votes 5]
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
import tempfile
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.llm_servers import LLMServer, OracleResponder  # noqa: E402

from symgen_datasets.pipeline.run import generate  # noqa: E402
from symgen_datasets.pipeline.settings import GenerateSettings  # noqa: E402
from symgen_datasets.tasks import get_task  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-samples", type=int, default=20)
    parser.add_argument("--min-votes", type=int, default=5)
    args = parser.parse_args()
    task = get_task("geoquery_sql")
    dev = [json.loads(line) for line in task.references_path().read_text().splitlines()]
    gold = {row["question"].strip(): row["query"] for row in dev}
    database = task.databases().source_path("geography_db")
    connection = sqlite3.connect(f"file:{database}?mode=ro", uri=True)

    def correct(question: str, query: str) -> bool:
        try:
            return Counter(connection.execute(query).fetchall()) == Counter(connection.execute(gold[question]).fetchall())
        except sqlite3.Error:
            return False

    print(f"GeoQuery-SQL dev: {len(dev)} questions, K={args.num_samples}, V={args.min_votes}, simulated LLM right 50% "
          "of the time, on 127.0.0.1")
    header = (f"{'sampling':<28} {'requests':>9} {'prompt tok':>11} {'compl. tok':>11} {'tok/kept row':>13} "
              f"{'precision':>9} {'yield':>7}")
    print(header)
    print("-" * len(header))
    figures = {}
    for name, kind, support in (("openai, n (default)", "openai", "full"),
                                ("openai, one per candidate", "openai", "ignore"),
                                ("tgi (no n)", "tgi", "ignore")):
        with LLMServer(OracleResponder(gold, accuracy=0.5), n_support=support, record=False) as server, \
                tempfile.TemporaryDirectory() as work:
            spec = f"openai:{server.url}#m" if kind == "openai" else f"tgi:{server.url}"
            result = generate(GenerateSettings(task="geoquery_sql", questions=str(task.references_path()), generator=spec,
                                               num_samples=args.num_samples, min_votes=args.min_votes, concurrency=32,
                                               work_dir=str(Path(work) / "run")), write=False)
            kept = [(r["question"], r["query"]) for r in result.rows]
            bill = result.bill
        right = sum(correct(q, s) for q, s in kept)
        tokens = bill["prompt_tokens"] + bill["completion_tokens"]
        figures[name] = tokens / max(1, len(kept))
        print(f"{name:<28} {bill['requests']:>9,} {bill['prompt_tokens']:>11,} {bill['completion_tokens']:>11,} "
              f"{tokens / max(1, len(kept)):>13,.0f} {right / max(1, len(kept)):>9.1%} {len(kept) / len(dev):>7.1%}")
    saving = figures["openai, one per candidate"] / figures["openai, n (default)"]
    print(f"\nbilled tokens per kept row, one request per candidate / n: {saving:.2f}x (issue target with adaptive voting: >= 5x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
