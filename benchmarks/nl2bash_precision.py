"""NL2Bash: precision of kept rows under the two ways of choosing a fuzzy cluster's program.

NL2Bash candidates agree by BLEU similarity (>= 0.5), so one cluster holds the right command and
its near corruptions. This benchmark answers the real NL2Bash dev questions through ``symgen
generate nl2bash --questions`` (K=20, V=5, SymGen's defaults) against a loopback TGI-protocol
server right half of the time; a wrong answer is, in equal shares, another question's gold
command, the gold with one token dropped, or the gold with two tokens swapped. Every answer's
log-probability is drawn from [-1.2, -0.05]: a near variant of a command is about as likely to a
model as the command itself (``--informative-logprobs``: correct answers from [-0.6, -0.05],
wrong ones from [-1.2, -0.2]). The stored candidates are then voted again in this process under
each rule:

* ``logprob`` (the former rule): the member with the highest log-probability, then the most samples;
* ``support`` (the rule now used for fuzzy clusters): the member with the most samples of its
  own, then the highest log-probability.

A kept row is correct when its command has the gold's bashlex token sequence. Printed per seed and
rule: questions, kept (yield) and kept rows correct (precision). Target: precision >= 0.9 at the
same yield (the cluster, and so the yield, does not depend on the rule).

Usage: python benchmarks/nl2bash_precision.py [--rows 200] [--seeds 0 1 2]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from symgen_datasets.pipeline import GenerateSettings, run  # noqa: E402
from symgen_datasets.tasks import get_task  # noqa: E402
from symgen_datasets.verifiers.agreement import distinct_programs, majority_vote  # noqa: E402
from tests.llm_servers import LLMServer, _logprobs, last_question  # noqa: E402


class CorruptingBashOracle:
    """Right with probability ``accuracy``; else another gold command, the gold with one token
    dropped, or with two tokens swapped (draws depend on question and seed only)."""

    def __init__(self, gold: dict[str, str], accuracy: float = 0.5, informative: bool = False):
        self.gold, self.accuracy = gold, accuracy
        self.right, self.wrong = ((-0.6, -0.05), (-1.2, -0.2)) if informative else ((-1.2, -0.05), (-1.2, -0.05))
        self.pool = sorted(set(gold.values()))

    def __call__(self, prompt: str, parameters: dict, seed: int):
        question = last_question(prompt)
        rng = random.Random(f"{question}|{seed}")
        gold = self.gold.get(question or "", "ls")
        if rng.random() < self.accuracy:
            return gold + "\n\n", _logprobs(gold, rng.uniform(*self.right))
        tokens, kind = gold.split(" "), rng.randrange(3)
        if kind == 0 or len(tokens) < 3:
            text = rng.choice([c for c in self.pool if c != gold])
        elif kind == 1:
            del tokens[rng.randrange(1, len(tokens))]
            text = " ".join(tokens)
        else:
            i, j = rng.sample(range(1, len(tokens)), 2)
            tokens[i], tokens[j] = tokens[j], tokens[i]
            text = " ".join(tokens)
        return text + "\n\n", _logprobs(text, rng.uniform(*self.wrong))


def measure(rows: int, seed: int, num_samples: int, min_votes: int,
            informative: bool = False) -> dict[str, tuple[int, int, int]]:
    task = get_task("nl2bash")
    dev = [json.loads(line) for line in task.references_path().read_text().splitlines()][:rows]
    gold = {r["nl"]: r["bash"] for r in dev}
    verifier = task.make_verifier(task.load_knowledge(task.options_with_defaults({})))
    with tempfile.TemporaryDirectory() as folder, LLMServer(CorruptingBashOracle(gold, informative=informative), record=False) as server:
        questions = Path(folder) / "questions.jsonl"
        questions.write_text("".join(json.dumps({"nl": r["nl"]}) + "\n" for r in dev))
        result = run(GenerateSettings(task="nl2bash", questions=str(questions), generator=f"tgi:{server.url}",
                                      num_samples=num_samples, min_votes=min_votes, seed=seed, concurrency=32,
                                      work_dir=str(Path(folder) / "work"), cache=False))
        candidates, kept_rows = list(result.candidates), list(result.rows)  # read before the work folder goes
    scores = {}
    with verifier:
        gold_keys = {q: verifier.execute(None, [g])[0].key for q, g in gold.items()}
        outcomes_of = {}
        for rule in ("logprob", "support"):
            kept = correct = 0
            for number, row in enumerate(candidates):
                programs, index = distinct_programs(row["candidates"], verifier.normalize)
                if number not in outcomes_of:
                    outcomes_of[number] = verifier.execute(verifier.context(row), programs)
                outcomes = outcomes_of[number]
                vote = majority_vote(row["candidates"], outcomes, row["candidate_logprobs"], (programs, index),
                                     verifier.cluster_labels(outcomes, index), verifier.barred_labels, rule)
                if vote.program is not None and vote.votes >= min_votes:
                    kept += 1
                    correct += outcomes[vote.winner].key == gold_keys[row["nl"]]
            scores[rule] = (len(dev), kept, correct)
        pipeline_correct = sum(verifier.execute(None, [r["bash"]])[0].key == gold_keys[r["nl"]] for r in kept_rows)
    scores["pipeline"] = (len(dev), len(kept_rows), pipeline_correct)
    return scores


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--num-samples", type=int, default=20)
    parser.add_argument("--min-votes", type=int, default=5)
    parser.add_argument("--informative-logprobs", action="store_true", help="right answers more likely than wrong ones")
    args = parser.parse_args()
    print(f"{'seed':>4} {'rule':<9} {'questions':>9} {'kept':>5} {'kept %':>7} {'precision':>9}")
    totals: dict[str, list[int]] = {}
    for seed in args.seeds:
        for rule, (questions, kept, correct) in measure(args.rows, seed, args.num_samples, args.min_votes,
                                                              args.informative_logprobs).items():
            total = totals.setdefault(rule, [0, 0, 0])
            total[0] += questions
            total[1] += kept
            total[2] += correct
            print(f"{seed:>4} {rule:<9} {questions:>9} {kept:>5} {kept / questions:>7.1%} {correct / max(1, kept):>9.3f}",
                  flush=True)
    for rule, (questions, kept, correct) in totals.items():
        print(f" all {rule:<9} {questions:>9} {kept:>5} {kept / questions:>7.1%} {correct / max(1, kept):>9.3f}")
    before, after = totals["logprob"], totals["support"]
    print(f"precision {before[2] / max(1, before[1]):.3f} -> {after[2] / max(1, after[1]):.3f} at the same yield "
          f"({after[1]} of {after[0]} kept); the pipeline's own rows: {totals['pipeline'][2]} of {totals['pipeline'][1]} "
          "correct")
    return 0


if __name__ == "__main__":
    sys.exit(main())
