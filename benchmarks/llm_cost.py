"""What an LLM bills for a dataset: the 280 GeoQuery-SQL dev questions at K=20, V=5, through a
loopback server right half the time (tests.llm_servers.OracleResponder) that reports the tokens
it bills: each request's prompt once, every returned choice.

Each sampling mode (``--sampling``) on two servers, in one run on this machine:

* ``openai``: an OpenAI-compatible server that takes ``n`` (vLLM, SGLang, OpenAI);
* ``tgi``: TGI's ``/generate``, which has no ``n``: one request per candidate, so the saving
  comes from adaptive voting alone.

Modes: ``fixed`` (SymGen's procedure: K requests of one candidate, the prompt billed K times),
``all`` (K candidates, one request with n where the server takes it), ``exact`` (the default:
rounds stopped once more candidates cannot change the outcome) and ``adaptive --confidence
0.95`` (Adaptive-Consistency's statistical stop as well).

For each it prints requests, billed prompt and completion tokens (the run's bill: the server's
``usage``, or the tokenizer's count for TGI's prompts), candidates sampled, tokens per kept row,
precision of the kept rows against gold (by execution) and yield. It then checks, on each
server, that ``exact`` keeps the same questions with the same winning clusters (result keys) as
sampling all K of the same requests, and prints the saving of the default against ``fixed`` on
the server that takes ``n`` (target: >= 5x fewer billed tokens per kept row), and of ``exact``
against ``fixed`` on TGI.

Usage: python benchmarks/llm_cost.py [--num-samples 20] [--min-votes 5] [--questions N]
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
from symgen_datasets.verifiers.sqlite import normalize_sql  # noqa: E402


def winning_cluster(row: dict) -> str | None:
    """The result key of a verified question's winning cluster (its representative's result)."""
    if not row["query"]:
        return None
    normalised = [normalize_sql(c) for c in row["candidates"]]
    return row["candidate_result"][normalised.index(normalize_sql(row["query"]))]


def geoquery_dev(count: int | None):
    """The first ``count`` GeoQuery-SQL dev rows (all 280 when ``None``), their gold queries by
    question, and a judge: whether a query returns the gold query's rows on the real database."""
    task = get_task("geoquery_sql")
    dev = [json.loads(line) for line in task.references_path().read_text().splitlines()][:count]
    gold = {row["question"].strip(): row["query"] for row in dev}
    connection = sqlite3.connect(f"file:{task.databases().source_path('geography_db')}?mode=ro", uri=True)

    def correct(question: str, query: str) -> bool:
        try:
            return Counter(connection.execute(query).fetchall()) == Counter(connection.execute(gold[question]).fetchall())
        except sqlite3.Error:
            return False

    return dev, gold, correct


def write_questions(path: Path, dev: list[dict]) -> Path:
    """``dev``'s questions (question and db_id) as the JSONL file ``--questions`` reads."""
    path.write_text("".join(json.dumps({"question": r["question"], "db_id": r["db_id"]}) + "\n" for r in dev))
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-samples", type=int, default=20)
    parser.add_argument("--min-votes", type=int, default=5)
    parser.add_argument("--questions", type=int, default=None, help="the first N dev questions (default: all 280)")
    parser.add_argument("--accuracy", type=float, default=0.5, help="how often the simulated LLM is right (default 0.5)")
    parser.add_argument("--embedded", type=int, default=0, metavar="N",
                        help="instead: the embedded model (a weak LLM, on this CPU, behind the loopback TGI server) "
                             "on the first N questions, with --sampling fixed, exact and adaptive (e.g. --num-samples 8 "
                             "--min-votes 3)")
    args = parser.parse_args()
    if args.embedded:
        return weak_model(args)
    dev, gold, correct = geoquery_dev(args.questions)
    print(f"GeoQuery-SQL dev: {len(dev)} questions, K={args.num_samples}, V={args.min_votes}, simulated LLM right "
          f"{args.accuracy:.0%} of the time, on 127.0.0.1")
    header = (f"{'server, --sampling':<30} {'requests':>9} {'prompt tok':>11} {'compl. tok':>11} {'cand./q':>8} "
              f"{'tok/kept row':>13} {'precision':>9} {'yield':>7}")
    print(header)
    print("-" * len(header))
    figures: dict[tuple[str, str], dict] = {}
    with tempfile.TemporaryDirectory() as work:
        questions = write_questions(Path(work) / "questions.jsonl", dev)
        for kind, support in (("openai", "full"), ("tgi", "ignore")):
            for sampling in ("fixed", "all", "exact", "adaptive"):
                with LLMServer(OracleResponder(gold, accuracy=args.accuracy), n_support=support, record=False) as server:
                    spec = f"openai:{server.url}#m" if kind == "openai" else f"tgi:{server.url}"
                    result = generate(GenerateSettings(
                        task="geoquery_sql", questions=str(questions), generator=spec, num_samples=args.num_samples,
                        min_votes=args.min_votes, concurrency=32, sampling=sampling, confidence=0.95,
                        work_dir=str(Path(work) / f"{kind}-{sampling}")), write=False)
                kept = [(r["question"], r["query"]) for r in result.rows]
                bill = result.bill
                tokens = bill["prompt_tokens"] + bill["completion_tokens"]
                right = sum(correct(q, s) for q, s in kept)
                clusters = {row["question"]: winning_cluster(row) for row in result.candidates
                            if row["votes"] >= args.min_votes and row["query"]}
                figures[kind, sampling] = {
                    "per_row": tokens / max(1, len(kept)), "precision": right / max(1, len(kept)),
                    "yield": len(kept) / len(dev), "clusters": clusters}
                name = f"{kind}, {sampling}" + (" (default)" if sampling == "exact" else "") + \
                    (" 0.95" if sampling == "adaptive" else "")
                print(f"{name:<30} {bill['requests']:>9,} {bill['prompt_tokens']:>11,} {bill['completion_tokens']:>11,} "
                      f"{result.counts['candidates_sampled'] / len(dev):>8.1f} {tokens / max(1, len(kept)):>13,.0f} "
                      f"{right / max(1, len(kept)):>9.1%} {len(kept) / len(dev):>7.1%}", flush=True)
    print()
    met = True
    for kind in ("openai", "tgi"):
        exact, whole = figures[kind, "exact"]["clusters"], figures[kind, "all"]["clusters"]
        same = exact == whole
        met &= same
        print(f"{kind}: exact keeps the same questions with the same winning clusters as all K of the same requests: "
              f"{'yes' if same else 'NO'} ({len(exact)} kept; all K: {len(whole)})")
    saving = figures["openai", "fixed"]["per_row"] / figures["openai", "exact"]["per_row"]
    met &= saving >= 5
    print(f"openai: billed tokens per kept row, fixed / default (exact): {saving:.2f}x (target >= 5x)")
    tgi = figures["tgi", "fixed"]["per_row"] / figures["tgi", "exact"]["per_row"]
    print(f"tgi: billed tokens per kept row, fixed / exact: {tgi:.2f}x (adaptive voting alone)")
    for kind in ("openai", "tgi"):
        exact, adaptive = figures[kind, "exact"], figures[kind, "adaptive"]
        print(f"{kind}: adaptive 0.95 vs exact: precision {100 * (adaptive['precision'] - exact['precision']):+.1f} points, "
              f"yield {100 * (adaptive['yield'] - exact['yield']):+.1f} points, tokens per kept row "
              f"{exact['per_row'] / adaptive['per_row']:.2f}x fewer")
    print(f"targets: {'met' if met else 'NOT met'}")
    return 0 if met else 1


class EmbeddedResponder:
    """The embedded model (SmolLM2-135M, a weak LLM) behind the loopback server: each request is
    one sample of its seed, remembered, so that the modes share the candidates they have in
    common (candidate i keeps its seed whatever the rounds)."""

    def __init__(self) -> None:
        from symgen_datasets.generators.local import EmbeddedGenerator

        self.generator = EmbeddedGenerator()
        self.memo: dict[tuple, tuple[str, list[float]]] = {}

    def __call__(self, prompt: str, parameters: dict, seed: int) -> tuple[str, list[float]]:
        from symgen_datasets.generators import SamplingParams

        params = SamplingParams(float(parameters.get("temperature") or 0.8), int(parameters.get("max_new_tokens") or 200),
                                tuple(parameters.get("stop") or ()))
        key = (prompt, seed, params)
        if key not in self.memo:
            completion = self.generator._generate(prompt, params, [seed])[0]
            logprob = completion.mean_logprob if completion.mean_logprob is not None else -1.0
            self.memo[key] = (completion.text, [logprob] * max(1, completion.completion_tokens))
        return self.memo[key]


def weak_model(args: argparse.Namespace) -> int:
    """The embedded model served over TGI's protocol (one request per candidate) on the first
    ``args.embedded`` dev questions under ``fixed``, ``exact`` and ``adaptive``: candidates per
    question, kept rows, precision against gold and yield."""
    dev, _, correct = geoquery_dev(args.embedded)
    print(f"embedded model over TGI's protocol, GeoQuery-SQL dev: {len(dev)} questions, K={args.num_samples}, "
          f"V={args.min_votes}, this CPU")
    print(f"{'--sampling':<14} {'requests':>9} {'cand./q':>8} {'kept':>5} {'correct':>8} {'precision':>9} {'yield':>7}")
    responder = EmbeddedResponder()
    with tempfile.TemporaryDirectory() as work, LLMServer(responder, record=False) as server:
        questions = write_questions(Path(work) / "questions.jsonl", dev)
        for sampling in ("fixed", "exact", "adaptive"):
            try:
                result = generate(GenerateSettings(
                    task="geoquery_sql", questions=str(questions), generator=f"tgi:{server.url}",
                    num_samples=args.num_samples, min_votes=args.min_votes, sampling=sampling, concurrency=1,
                    work_dir=str(Path(work) / sampling)), write=False)
                kept = [(r["question"], r["query"]) for r in result.rows]
                sampled, requests = result.counts["candidates_sampled"], result.bill["requests"]
            except Exception as error:  # NothingKept: no question reached V
                kept, sampled, requests = [], getattr(error, "counts", {}).get("candidates_sampled", 0), 0
            right = sum(correct(q, s) for q, s in kept)
            precision = f"{right / len(kept):.1%}" if kept else "-"
            print(f"{sampling:<14} {requests:>9} {sampled / len(dev):>8.1f} {len(kept):>5} {right:>8} {precision:>9} "
                  f"{len(kept) / len(dev):>7.1%}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
