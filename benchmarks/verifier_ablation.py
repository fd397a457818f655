"""SymGen's verifier ablation, measured: is verified synthetic data worth training on?

The experiment of the README. The 600 real GeoQuery-SQL train questions are answered through a
loopback TGI-protocol server that is right half of the time (``tests/llm_servers.OracleResponder``:
a wrong answer is one of the question's plausible mistakes, another query of the same database,
or broken SQL), with ``symgen generate --questions`` (K=10 candidates, V=3 votes). The same small
model (default: the embedded SmolLM2-135M-Instruct) is fine-tuned with ``training/finetune.py``,
the same number of optimizer steps and the same hyper-parameters, on

  (a) verified: the rows the agreement verifier kept (the dataset folder ``generate`` wrote);
  (b) first candidate: the first sampled candidate of every question (where a program could be
      extracted from the completion), no verifier;
  (c) gold: the real train set;

and each model is scored with ``symgen evaluate`` on the 280 real dev questions (execution
accuracy, the official Spider test-suite semantics). The share of each training set's rows that
are correct (execution against the gold query) is printed beside it.

Writes ``ablation.json``, ``ablation.png`` and the three models under ``--output-dir``; a model
already trained and evaluated there with the same steps and seed is reused (delete it to redo it).

Usage: python benchmarks/verifier_ablation.py [--max-steps 76] [--output-dir ./symgen-ablation]
       (CPU, 2 cores: about 15 minutes per model at the defaults)
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from symgen_datasets.pipeline import GenerateSettings, generate  # noqa: E402
from symgen_datasets.tasks import get_task  # noqa: E402
from tests.llm_servers import LLMServer, OracleResponder  # noqa: E402

TASK = "geoquery_sql"
TRAIN = ROOT.parent / "shared" / "data" / "symgen" / "geoquery_sql" / "train.json"
FIELDS = ("question", "query", "db_id")


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    """Write ``rows`` (their SQL fields only) as JSONL; returns ``path``."""
    path.write_text("".join(json.dumps({k: row[k] for k in FIELDS}) + "\n" for row in rows))
    return path


def rows_correct(rows: list[dict], gold: dict[str, str]) -> float:
    """The share of ``rows`` whose query returns the gold query's rows (as a multiset) for the
    same question. (Not the EX metric: 2 of the 600 real train gold queries do not run on SQLite,
    and the metric refuses references that fail; their rows count as wrong here.)"""
    database = get_task(TASK).databases().source_path("geography_db")
    connection = sqlite3.connect(f"file:{database}?mode=ro", uri=True)

    def result(query: str):
        try:
            return Counter(connection.execute(query).fetchall())
        except sqlite3.Error:
            return None

    try:
        return sum(result(r["query"]) is not None and result(r["query"]) == result(gold[r["question"].strip()])
                   for r in rows) / len(rows)
    finally:
        connection.close()


def train_and_evaluate(name: str, dataset: Path, output: Path, args: argparse.Namespace) -> dict:
    """Fine-tune on ``dataset`` with ``training/finetune.py``, then ``symgen evaluate`` the model
    on the packaged dev set; returns the metrics (the ``--json`` line) and the training record."""
    model_dir = output / name
    record_file, metrics_file = model_dir / "symgen_task_model.json", model_dir / "evaluation" / "metrics.json"
    if record_file.is_file() and metrics_file.is_file():  # done by an earlier run with the same settings: reuse
        training = json.loads(record_file.read_text()).get("training", {})
        if training.get("steps") == args.max_steps and training.get("hyperparameters", {}).get("seed") == args.seed:
            print(f"== ({name}) reusing the model and evaluation in {model_dir}", flush=True)
            metrics = json.loads(metrics_file.read_text())["metrics"]
            return {"metrics": metrics, "train_tokens_per_s": training.get("train_tokens_per_s"),
                    "peak_memory_mib": training.get("peak_memory_mib"), "steps": training.get("steps")}
    command = [sys.executable, str(ROOT / "training" / "finetune.py"), "--dataset", str(dataset), "--task", TASK,
               "--model", args.model, "--output-dir", str(model_dir), "--max-steps", str(args.max_steps),
               "--per-device-train-batch-size", str(args.batch_size), "--learning-rate", str(args.learning_rate),
               "--warmup-ratio", "0.05", "--seed", str(args.seed), "--eval-strategy", "no", "--cpu"]
    print(f"\n== ({name}) training on {dataset}", flush=True)
    subprocess.run(command, check=True)
    print(f"== ({name}) evaluating on the real dev set", flush=True)
    done = subprocess.run([sys.executable, "-m", "symgen_datasets.cli", "evaluate", str(model_dir), "--json",
                           "--output-dir", str(model_dir / "evaluation")],
                          check=True, stdout=subprocess.PIPE, text=True)
    print(done.stdout, end="", flush=True)
    metrics = json.loads(done.stdout.strip().splitlines()[-1])
    training = json.loads((model_dir / "symgen_task_model.json").read_text()).get("training", {})
    return {"metrics": metrics, "train_tokens_per_s": training.get("train_tokens_per_s"),
            "peak_memory_mib": training.get("peak_memory_mib"), "steps": training.get("steps")}


def plot(results: dict, path: Path) -> None:
    """A bar chart of dev execution accuracy per training set."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results)
    values = [results[n]["metrics"]["execution_accuracy"] for n in names]
    figure, axes = plt.subplots(figsize=(6, 3.2))
    bars = axes.bar(names, values, color=["#4c72b0", "#c44e52", "#55a868"][:len(names)])
    for bar, value in zip(bars, values):
        axes.text(bar.get_x() + bar.get_width() / 2, value, f"{value:.1%}", ha="center", va="bottom")
    axes.set_ylabel("dev execution accuracy")
    axes.set_ylim(0, max(values + [0.1]) * 1.2)
    axes.set_title("GeoQuery-SQL: the same small model trained on ...", fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=Path, default=TRAIN, help="real GeoQuery-SQL train rows (JSONL)")
    parser.add_argument("--output-dir", type=Path, default=Path("symgen-ablation"))
    parser.add_argument("--model", default="embedded")
    parser.add_argument("--max-steps", type=int, default=76, help="optimizer steps for every model (76: 2 epochs of 600 rows)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--learning-rate", type=float, default=1e-4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--accuracy", type=float, default=0.5, help="how often the simulated LLM is right")
    parser.add_argument("--num-samples", type=int, default=10)
    parser.add_argument("--min-votes", type=int, default=3)
    args = parser.parse_args()

    output = args.output_dir
    output.mkdir(parents=True, exist_ok=True)
    train = [json.loads(line) for line in args.train.read_text().splitlines() if line.strip()]
    gold = {row["question"].strip(): row["query"] for row in train}

    # --- the synthetic data: the LLM answers the real train questions ------------------------
    questions = write_jsonl(output / "train_gold.jsonl", train)
    verified_dir = output / "verified-dataset"
    with LLMServer(OracleResponder(gold, accuracy=args.accuracy)) as server, tempfile.TemporaryDirectory() as work:
        result = generate(GenerateSettings(
            task=TASK, questions=str(questions), generator=f"tgi:{server.url}", num_samples=args.num_samples,
            min_votes=args.min_votes, seed=args.seed, concurrency=32, work_dir=work, cache=False,
            output=str(verified_dir), overwrite=True,
        ))
        kept = list(result.rows)
        # what a pipeline without the verifier keeps: the first completion, where a program was extracted
        first = [{**c, "query": c["candidates"][0]} for c in result.candidates if c["candidates"][0]]
    write_jsonl(output / "train_first_candidate.jsonl", first)
    sets = {
        "verified": (verified_dir, kept),
        "first candidate": (output / "train_first_candidate.jsonl", first),
        "gold": (questions, train),
    }
    results = {}
    for name, (dataset, rows) in sets.items():
        results[name] = {"rows": len(rows), "rows_correct": round(rows_correct(rows, gold), 4),
                         **train_and_evaluate(name.replace(" ", "-"), dataset, output, args)}

    record = {"task": TASK, "train_questions": len(train), "llm_accuracy": args.accuracy,
              "num_samples": args.num_samples, "min_votes": args.min_votes, "model": args.model,
              "max_steps": args.max_steps, "batch_size": args.batch_size, "learning_rate": args.learning_rate,
              "seed": args.seed, "results": results}
    (output / "ablation.json").write_text(json.dumps(record, indent=1) + "\n")
    plot(results, output / "ablation.png")

    print(f"\nGeoQuery-SQL, {len(train)} real train questions, simulated LLM right {args.accuracy:.0%} of the time "
          f"(K={args.num_samples}, V={args.min_votes}); {args.model} fine-tuned {args.max_steps} steps "
          f"(batch {args.batch_size}, lr {args.learning_rate}) on each set; dev = 280 real questions")
    print("| training set | rows | rows correct | dev EX | dev EM | valid SQL |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, r in results.items():
        m = r["metrics"]
        print(f"| {name} | {r['rows']} | {r['rows_correct']:.1%} | {m['execution_accuracy']:.1%} | "
              f"{m.get('exact_match', float('nan')):.1%} | {m.get('valid_sql', float('nan')):.1%} |")
    print(f"wrote {output / 'ablation.json'} and {output / 'ablation.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
