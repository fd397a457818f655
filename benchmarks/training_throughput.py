"""Training throughput: ``training/finetune.py`` against a plain transformers ``Trainer``.

Both train the same base model on the same rows (the task's input and target, encoded by the same
code, padded by the same collator) for the same number of optimizer steps with the same
hyper-parameters (AdamW, linear schedule, learning rate, batch size, seed), each in a process of
its own so that peak memory is its own. Reported per method:

* training tokens/s: non-padding tokens of the batches trained on, over the seconds of the
  training loop (ours: the loop's own clock, evaluations and checkpoints excluded, as its
  progress bar shows; the Trainer: the wall time of ``trainer.train()``, whose start-up is small
  against the steps);
* dev accuracy: both models scored by ``symgen evaluate`` (same prediction code) on the first
  ``--eval-limit`` rows of the task's packaged real dev set;
* peak memory: GPU memory allocated on a GPU, else the process's peak RSS (MiB).

Target: ours/Trainer tokens/s >= 1.0, with the same dev accuracy (within a question or two).

Usage: python benchmarks/training_throughput.py [--dataset FILE --task TASK] [--max-steps 30]
       (default: 600 real GeoQuery-SQL train rows, the embedded model; ~4 minutes per method on 2 CPU cores)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TRAIN = ROOT.parent / "shared" / "data" / "symgen" / "geoquery_sql" / "train.json"


def run_trainer(args: argparse.Namespace) -> dict:
    """Train with ``transformers.Trainer`` (in this process) and save a task model folder."""
    import torch
    from transformers import DataCollatorForSeq2Seq, Seq2SeqTrainer, Seq2SeqTrainingArguments, Trainer, TrainingArguments

    from symgen_datasets.training.finetune import load_training_rows, peak_memory_mib
    from symgen_datasets.training.task_model import TaskModelConfig, encode, load_base_model

    task, rows, _ = load_training_rows(args.dataset, args.task)
    knowledge = task.load_knowledge(task.options_with_defaults({}))
    knowledge.prepare({name: row[name] for name in task.context_fields} for row in rows)
    model, tokenizer, architecture = load_base_model(args.model)
    examples = [encode(task, row, knowledge, tokenizer, architecture, 512, 256) for row in rows]
    collate = DataCollatorForSeq2Seq(tokenizer, model=model if architecture == "seq2seq" else None,
                                     label_pad_token_id=-100, padding=True)
    tokens = [0]

    def counting_collator(features):
        batch = collate(features)
        tokens[0] += int(batch["attention_mask"].sum()) + (int((batch["labels"] != -100).sum())
                                                           if architecture == "seq2seq" else 0)
        return batch

    arguments_class, trainer_class = ((Seq2SeqTrainingArguments, Seq2SeqTrainer) if architecture == "seq2seq"
                                      else (TrainingArguments, Trainer))
    arguments = arguments_class(
        output_dir=str(Path(args.output) / "trainer-state"), max_steps=args.max_steps, learning_rate=args.learning_rate,
        per_device_train_batch_size=args.batch_size, lr_scheduler_type="linear", weight_decay=0.0, max_grad_norm=1.0,
        seed=args.seed, save_strategy="no", eval_strategy="no", logging_steps=10, report_to=[],
        use_cpu=not torch.cuda.is_available(), dataloader_num_workers=0, remove_unused_columns=False,
        disable_tqdm=False,
    )
    trainer = trainer_class(model=model, args=arguments, train_dataset=examples, data_collator=counting_collator)
    started = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - started
    output = Path(args.output)
    trainer.model.save_pretrained(output, safe_serialization=True)
    tokenizer.save_pretrained(output)
    TaskModelConfig(task=task.name, architecture=architecture, max_source_length=512, max_target_length=256,
                    base_model=args.model, task_options={}).save(output)
    knowledge.cleanup()
    return {"tokens": tokens[0], "seconds": seconds, "tokens_per_s": tokens[0] / seconds, "peak_memory_mib": peak_memory_mib()}


def run_ours(args: argparse.Namespace) -> dict:
    """Train with ``training/finetune.py`` (in this process)."""
    from symgen_datasets.training import TrainConfig, train

    result = train(TrainConfig(dataset=args.dataset, task=args.task, model=args.model, output_dir=args.output,
                               max_steps=args.max_steps, learning_rate=args.learning_rate,
                               per_device_train_batch_size=args.batch_size, seed=args.seed, eval_strategy="no",
                               save_steps=10 ** 9, logging_steps=10))
    return {"tokens_per_s": result.train_tokens_per_s, "peak_memory_mib": result.peak_memory_mib}


def measure(method: str, args: argparse.Namespace, folder: Path) -> dict:
    """Train with ``method`` in a child process, then evaluate the model on real dev rows."""
    output = folder / method
    command = [sys.executable, __file__, "--worker", method, "--output", str(output), "--dataset", args.dataset,
               "--task", args.task, "--model", args.model, "--max-steps", str(args.max_steps),
               "--batch-size", str(args.batch_size), "--learning-rate", str(args.learning_rate), "--seed", str(args.seed)]
    print(f"== {method}: training {args.max_steps} steps", flush=True)
    done = subprocess.run(command, check=True, stdout=subprocess.PIPE, text=True)
    record = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"== {method}: evaluating on {args.eval_limit} real dev rows", flush=True)
    evaluation = subprocess.run([str(Path(sys.executable).parent / "symgen"), "evaluate", str(output), "--limit",
                                 str(args.eval_limit), "--json", "--output-dir", str(folder / f"{method}-evaluation")],
                                check=True, stdout=subprocess.PIPE, text=True)
    metrics = json.loads(evaluation.stdout.strip().splitlines()[-1])
    return {**record, "dev": metrics}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default=str(TRAIN), help="rows to train on (a file of real rows, a dataset folder, a Hub id)")
    parser.add_argument("--task", default="geoquery_sql")
    parser.add_argument("--model", default="embedded")
    parser.add_argument("--max-steps", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--learning-rate", type=float, default=1e-4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eval-limit", type=int, default=100)
    parser.add_argument("--worker", choices=("ours", "trainer"), help=argparse.SUPPRESS)
    parser.add_argument("--output", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        record = run_ours(args) if args.worker == "ours" else run_trainer(args)
        print(json.dumps(record))
        return 0

    with tempfile.TemporaryDirectory() as folder:
        results = {method: measure(method, args, Path(folder)) for method in ("ours", "trainer")}
    primary = next(iter(results["ours"]["dev"]))
    print(f"\n{args.task}: {args.model}, {args.max_steps} steps of batch {args.batch_size} on {args.dataset}")
    print(f"{'method':<10} {'tokens/s':>10} {'peak MiB':>10} {'dev ' + primary:>26}")
    for method, r in results.items():
        print(f"{method:<10} {r['tokens_per_s']:>10,.0f} {r['peak_memory_mib']:>10,.0f} {r['dev'][primary]:>26.4f}")
    ratio = results["ours"]["tokens_per_s"] / results["trainer"]["tokens_per_s"]
    gap = abs(results["ours"]["dev"][primary] - results["trainer"]["dev"][primary])
    print(f"ours / Trainer tokens/s: {ratio:.2f}x (target >= 1.0); dev {primary} difference {gap:.4f}")
    return 0 if ratio >= 1.0 else 1


if __name__ == "__main__":
    sys.exit(main())
