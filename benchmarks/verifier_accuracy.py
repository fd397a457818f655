"""Verifier accuracy: how correct are the kept rows, and how many questions are kept?

The run of the generate issue's "Done when": the 280 GeoQuery-SQL dev questions are answered
through ``symgen generate --questions ... --generator tgi:URL --num-samples 10 --min-votes 3``
against a loopback TGI-protocol server whose answers are right half of the time (see
``tests/llm_servers.OracleResponder``: a wrong answer repeats one of the question's plausible
mistakes with probability REPEAT, else is another question's query or broken SQL). Kept rows are
checked by execution against the gold query (multiset of rows).

Baseline, measured in the same run: taking the first sampled candidate with no verification.
A sweep over how concentrated the model's mistakes are shows where majority voting breaks down
(one mistake repeated in half of the wrong answers is close to a coin flip against the gold).

Targets (default model: 2 plausible mistakes, repeated in 40% of wrong answers):
kept rows >= 95% correct, >= 90% of questions kept.

Usage: python benchmarks/verifier_accuracy.py [--seeds 0 1 2 3 4] [--accuracy 0.5]
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

from symgen_datasets.pipeline import GenerateSettings, generate  # noqa: E402
from symgen_datasets.tasks import get_task  # noqa: E402
from tests.llm_servers import LLMServer, OracleResponder  # noqa: E402

DEV = get_task("geoquery_sql").references_path()


def run(dev, gold, correct, seeds, accuracy, repeat, mistakes, num_samples, min_votes, verbose) -> tuple[float, float, float]:
    """Run the pipeline once per seed; return (kept share, kept correct share, baseline correct share)."""
    totals = Counter()
    for seed in seeds:
        responder = OracleResponder(gold, accuracy=accuracy, repeat=repeat, mistakes=mistakes)
        # a work folder of its own, no response cache: every simulated model has the same id, so
        # a shared cache would serve one setting's answers to the next
        with LLMServer(responder) as server, tempfile.TemporaryDirectory() as work:
            result = generate(
                GenerateSettings(
                    task="geoquery_sql", questions=str(DEV), generator=f"tgi:{server.url}",
                    num_samples=num_samples, min_votes=min_votes, seed=seed, concurrency=32,
                    work_dir=work, cache=False,
                ),
                write=False,
            )
            kept = len(result.rows)  # the rows live in the work folder: read them before it goes
            kept_correct = sum(correct(r["question"], r["query"]) for r in result.rows)
            baseline_correct = sum(correct(c["question"], c["candidates"][0]) for c in result.candidates)
        totals.update(kept=kept, kept_correct=kept_correct, baseline=baseline_correct, questions=len(dev))
        if verbose:
            print(f"{seed:>4}  {kept:>6}  {kept / len(dev):>7.1%}  {kept_correct / kept:>14.1%}  "
                  f"{baseline_correct / len(dev):>21.1%}  {(kept_correct / kept) / (baseline_correct / len(dev)):>5.2f}x")
    return totals["kept"] / totals["questions"], totals["kept_correct"] / totals["kept"], totals["baseline"] / totals["questions"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--accuracy", type=float, default=0.5, help="how often the simulated LLM is right")
    parser.add_argument("--num-samples", type=int, default=10)
    parser.add_argument("--min-votes", type=int, default=3)
    args = parser.parse_args()

    dev = [json.loads(line) for line in DEV.read_text().splitlines()]
    gold = {row["question"].strip(): row["query"] for row in dev}
    database = get_task("geoquery_sql").databases().source_path("geography_db")
    connection = sqlite3.connect(f"file:{database}?mode=ro", uri=True)

    def correct(question: str, query: str) -> bool:
        try:
            predicted = connection.execute(query).fetchall()
        except sqlite3.Error:
            return False
        return Counter(connection.execute(gold[question]).fetchall()) == Counter(predicted)

    common = dict(dev=dev, gold=gold, correct=correct, seeds=args.seeds, accuracy=args.accuracy,
                  num_samples=args.num_samples, min_votes=args.min_votes)
    print(f"GeoQuery-SQL dev: {len(dev)} questions, K={args.num_samples}, V={args.min_votes}, "
          f"simulated LLM right {args.accuracy:.0%} of the time, TGI protocol on 127.0.0.1")
    print(f"{'seed':>4}  {'kept':>6}  {'kept %':>7}  {'kept correct %':>14}  {'no-verifier correct %':>21}  {'ratio':>6}")
    kept_share, precision, baseline = run(repeat=0.4, mistakes=2, verbose=True, **common)
    print(f" all  {'':>6}  {kept_share:>7.1%}  {precision:>14.1%}  {baseline:>21.1%}  {precision / baseline:>5.2f}x")
    met = precision >= 0.95 and kept_share >= 0.90
    print(f"targets (kept correct >= 95%, kept >= 90%): {'met' if met else 'NOT met'}")

    print("\nsensitivity: how concentrated the wrong answers are (all seeds)")
    print(f"{'plausible mistakes':>18}  {'repeat share':>12}  {'kept %':>7}  {'kept correct %':>14}")
    for mistakes, repeat in ((3, 0.4), (2, 0.4), (1, 0.3), (1, 0.5)):
        kept_share_s, precision_s, _ = run(repeat=repeat, mistakes=mistakes, verbose=False, **common)
        print(f"{mistakes:>18}  {repeat:>12.0%}  {kept_share_s:>7.1%}  {precision_s:>14.1%}")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
