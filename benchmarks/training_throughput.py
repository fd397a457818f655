"""Training throughput: ``training/finetune.py`` with packing, without, and a plain transformers ``Trainer``.

The three train the same base model on the same rows (the task's input and target, encoded by
the same code) for the same number of optimizer steps with the same hyper-parameters (AdamW,
linear schedule, learning rate, batch size, seed), each in a process of its own so that peak
memory is its own. ``packed``: ours, a batch's rows packed into shared sequences
(``training/packing.py``); ``padded``: ours with ``--no-packing``; ``trainer``: the Trainer with
the padding collator. Reported per method:

* useful tokens/s: target tokens (those in the loss) of the batches trained on, over the seconds
  of the training loop (ours: the loop's own clock, evaluations and checkpoints excluded, as its
  progress bar shows; the Trainer: the wall time of ``trainer.train()``, whose start-up is small
  against the steps); and all tokens/s (padding excluded);
* dev accuracy: each model scored by ``symgen evaluate`` (same prediction code) on the first
  ``--eval-limit`` rows of the task's packaged real dev set;
* peak memory: GPU memory allocated on a GPU, else the process's peak RSS (MiB); also for
  ``lora``: ours with packing and LoRA r=16 adapters (peft), at ``--lora-learning-rate``.

Target: packed / Trainer useful tokens/s >= 1.5, with a dev accuracy that does not drop.

Usage: python benchmarks/training_throughput.py [--dataset FILE --task TASK] [--max-steps 30]
       (default: 600 real GeoQuery-SQL train rows, the embedded model; a few minutes per method on 2 CPU cores)
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
    tokens, targets = [0], [0]

    def counting_collator(features):
        batch = collate(features)
        tokens[0] += int(batch["attention_mask"].sum()) + (int((batch["labels"] != -100).sum())
                                                           if architecture == "seq2seq" else 0)
        targets[0] += int((batch["labels"] != -100).sum())
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
    return {"tokens": tokens[0], "seconds": seconds, "tokens_per_s": tokens[0] / seconds,
            "target_tokens_per_s": targets[0] / seconds, "peak_memory_mib": peak_memory_mib()}


def run_ours(args: argparse.Namespace) -> dict:
    """Train with ``training/finetune.py`` (in this process)."""
    from symgen_datasets.training import TrainConfig, train

    lora = args.worker == "lora"
    result = train(TrainConfig(dataset=args.dataset, task=args.task, model=args.model, output_dir=args.output,
                               max_steps=args.max_steps, learning_rate=args.lora_learning_rate if lora else args.learning_rate,
                               per_device_train_batch_size=args.batch_size, seed=args.seed, eval_strategy="no",
                               save_steps=10 ** 9, logging_steps=10, max_target_length=256,
                               packing=args.worker in ("packed", "lora"), lora_r=16 if lora else 0))
    assert result.packing == (args.worker in ("packed", "lora")), "packing was refused for this model"
    return {"tokens_per_s": result.train_tokens_per_s, "target_tokens_per_s": result.train_target_tokens_per_s,
            "peak_memory_mib": result.peak_memory_mib}


def measure(method: str, args: argparse.Namespace, folder: Path) -> dict:
    """Train with ``method`` in a child process, then evaluate the model on real dev rows."""
    output = folder / method
    command = [sys.executable, __file__, "--worker", method, "--output", str(output), "--dataset", args.dataset,
               "--task", args.task, "--model", args.model, "--max-steps", str(args.max_steps),
               "--batch-size", str(args.batch_size), "--learning-rate", str(args.learning_rate), "--seed", str(args.seed),
               "--lora-learning-rate", str(args.lora_learning_rate)]
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
    parser.add_argument("--lora-learning-rate", type=float, default=1e-3, help="for the LoRA r=16 run (adapters "
                        "train at a higher rate than whole weights)")
    parser.add_argument("--worker", choices=("packed", "padded", "trainer", "lora"), help=argparse.SUPPRESS)
    parser.add_argument("--output", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        record = run_trainer(args) if args.worker == "trainer" else run_ours(args)
        print(json.dumps(record))
        return 0

    with tempfile.TemporaryDirectory() as folder:
        results = {method: measure(method, args, Path(folder)) for method in ("packed", "padded", "trainer", "lora")}
    primary = next(iter(results["packed"]["dev"]))
    print(f"\n{args.task}: {args.model}, {args.max_steps} steps of batch {args.batch_size} on {args.dataset}")
    print(f"{'method':<10} {'useful tok/s':>13} {'tokens/s':>10} {'peak MiB':>10} {'dev ' + primary:>26}")
    for method, r in results.items():
        print(f"{method:<10} {r['target_tokens_per_s']:>13,.0f} {r['tokens_per_s']:>10,.0f} {r['peak_memory_mib']:>10,.0f} "
              f"{r['dev'][primary]:>26.4f}")
    trainer = results["trainer"]
    ratio = results["packed"]["target_tokens_per_s"] / trainer["target_tokens_per_s"]
    padded = results["padded"]["target_tokens_per_s"] / trainer["target_tokens_per_s"]
    drop = trainer["dev"][primary] - results["packed"]["dev"][primary]
    print(f"packed / Trainer useful tokens/s: {ratio:.2f}x (target >= 1.5); padded / Trainer: {padded:.2f}x; "
          f"dev {primary}: packed {results['packed']['dev'][primary]:.4f} vs Trainer {trainer['dev'][primary]:.4f}")
    full, lora = results["packed"]["peak_memory_mib"], results["lora"]["peak_memory_mib"]
    print(f"peak memory: full fine-tuning {full:,.0f} MiB, LoRA r=16 {lora:,.0f} MiB ({full / lora:.2f}x less with LoRA); "
          f"LoRA dev {primary} {results['lora']['dev'][primary]:.4f} (learning rate {args.lora_learning_rate:g})")
    met = ratio >= 1.5 and drop <= 0.02
    print(f"targets: {'met' if met else 'NOT met'} (dev accuracy may not drop by more than 2 points: "
          f"{args.eval_limit} questions, one question is {100 / args.eval_limit:.1f} points)")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
