"""The settings of a training run: ONE place for their names, defaults and help.

:class:`TrainConfig` declares every hyper-parameter once, under ``transformers.TrainingArguments``'
names, with its command-line flag and help in the field's metadata (as
:class:`~symgen_datasets.pipeline.settings.GenerateSettings` does for ``symgen generate``).
``symgen train``'s flags, ``symgen s3``'s training flags and ``symgen reproduce --retrain`` all
derive from it, and :func:`~symgen_datasets.training.finetune.train` takes it::

    from symgen_datasets.training import TrainConfig, train

    result = train(TrainConfig(dataset="./geoquery_sql-synth", output_dir="./geo-t1", max_steps=200))
    print(result.best)
"""

from __future__ import annotations

import argparse
from dataclasses import MISSING, dataclass, field
from pathlib import Path
from typing import Any

from symgen_datasets.errors import InputError
from symgen_datasets.pipeline.settings import add_dataclass_arguments, setting
from symgen_datasets.training.task_model import EMBEDDED

#: The hyper-parameters a model card records (``training.hyperparameters``) and ``reproduce
#: --retrain`` trains with again.
HYPERPARAMETERS = ("num_train_epochs", "max_steps", "learning_rate", "weight_decay", "warmup_ratio", "lr_scheduler_type",
                   "per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps",
                   "max_grad_norm", "seed", "max_source_length", "max_target_length", "eval_strategy", "eval_steps",
                   "eval_limit", "packing", "gradient_checkpointing", "lora_r", "lora_alpha", "lora_dropout",
                   "lora_target_modules")


@dataclass
class TrainConfig:
    """One training run (``symgen train``'s flags, same names; see ``symgen train --help``).

    Attributes:
        dataset: a Hub dataset id[@REVISION], a folder written by ``symgen generate``, or a
            JSONL/JSON file of rows with the task's fields.
        output_dir: where the best model, its card and the checkpoints go.
        task_options: the task's own options (``{"db_dir": ...}`` for SQL).

    The other fields are ``TrainingArguments``' hyper-parameters (``use_cpu`` is ``--cpu``).
    """

    dataset: str = setting(MISSING, "Hub dataset id[@REVISION], a folder written by `symgen generate`, or a JSONL/JSON "
                           "file of rows with the task's fields")
    output_dir: str = setting(MISSING, "where the best model, its card and the checkpoints go")
    task: str | None = setting(None, "the task (default: the dataset card's)")
    model: str = setting(EMBEDDED, "the base model: a Hub id, a folder, or `embedded` (SmolLM2-135M-Instruct, "
                         "offline; the default)")
    eval_references: str | None = setting(None, "real dev rows (default: the task's packaged dev set)", metavar="FILE")
    eval_limit: int | None = setting(None, "evaluate on the first N dev rows only", metavar="N")
    eval_strategy: str = setting("epoch", "when to evaluate on the dev rows (default: {default})",
                                 choices=("epoch", "steps", "no"))
    eval_steps: int | None = setting(None, "with --eval-strategy steps: every N optimizer steps", metavar="N")
    num_train_epochs: float = setting(3.0, "epochs (default: {default})")
    max_steps: int = setting(-1, "optimizer steps in all (overrides --num-train-epochs)")
    learning_rate: float = setting(5e-5, "peak learning rate (default: {default})")
    weight_decay: float = setting(0.0, "AdamW weight decay, not on biases and norms (default: {default})")
    warmup_ratio: float = setting(0.0, "share of the steps spent warming up (default: {default})")
    lr_scheduler_type: str = setting("linear", "transformers' scheduler name (default: {default})")
    per_device_train_batch_size: int = setting(8, "rows per batch and process (default: {default})")
    per_device_eval_batch_size: int = setting(16, "dev rows per generation batch (default: {default})")
    gradient_accumulation_steps: int = setting(1, "batches per optimizer step (default: {default})")
    max_grad_norm: float = setting(1.0, "gradient clipping (default: {default})")
    seed: int = setting(42, "seed of the weights' init, the data order and dropout (default: {default})")
    bf16: bool = setting(False, "bf16 mixed precision (default: on GPUs that support it)", action="store_true")
    fp16: bool = setting(False, "fp16 mixed precision", action="store_true")
    gradient_checkpointing: bool = setting(False, "recompute activations in the backward pass: less memory, about a "
                                           "third more compute", action="store_true")
    save_steps: int = setting(500, "a checkpoint every N optimizer steps (default: {default})")
    save_total_limit: int = setting(2, "checkpoints kept, the latest (default: {default})")
    resume_from_checkpoint: str | None = setting(None, "a checkpoint folder, or `latest` (the newest under "
                                                 "OUTPUT_DIR/checkpoints)", metavar="DIR")
    logging_steps: int = setting(10, "loss and tokens/s every N steps (default: {default})")
    packing: bool = setting(True, "pad every row to its batch's longest instead of packing a batch's rows into shared "
                            "sequences (packing is on for causal LMs whose attention honours per-row position ids, "
                            "checked at start; off for others)", flag="--no-packing", action="store_false")
    lora_r: int = setting(0, "LoRA rank (peft): train low-rank adapters of the base model's linear layers instead of "
                          "every weight; 0: full fine-tuning (default: {default})", metavar="R")
    lora_alpha: int = setting(16, "LoRA scaling numerator, the adapters' update scaled by alpha / r (default: {default})")
    lora_dropout: float = setting(0.05, "dropout on the adapters' input (default: {default})")
    lora_target_modules: str = setting("all-linear", "the modules that get adapters: comma-separated names (e.g. "
                                       "q_proj,v_proj) or all-linear (default: {default})", metavar="NAMES")
    max_source_length: int = setting(512, "input tokens at most (default: {default})")
    max_target_length: int | None = setting(None, "target tokens at most (and generated); default: fitted to the "
                                            "training answers (the longest x 1.25 + 8, in steps of 16, at most 512)")
    baseline_metrics: str | None = setting(None, "metrics.json of `symgen evaluate --generator` on the same references: "
                                           "the generator LLM's own score, shown in the card beside the model's",
                                           metavar="FILE")
    use_cpu: bool = setting(False, "train on the CPU even when a GPU is there", flag="--cpu", action="store_true")
    overwrite_output_dir: bool = setting(False, "train into a non-empty --output-dir, removing what an earlier run "
                                         "left there (without it, such a folder is refused unless resuming)",
                                         action="store_true")
    task_options: dict[str, Any] = field(default_factory=dict, metadata={"help": "the task's own options"})

    def problems(self) -> list[str]:
        """What is wrong with the hyper-parameters and the output folder, one message per flag."""
        from transformers import SchedulerType

        problems = []
        positive = {"learning_rate": self.learning_rate, "per_device_train_batch_size": self.per_device_train_batch_size,
                    "per_device_eval_batch_size": self.per_device_eval_batch_size,
                    "gradient_accumulation_steps": self.gradient_accumulation_steps, "save_steps": self.save_steps,
                    "logging_steps": self.logging_steps, "max_source_length": self.max_source_length}
        if self.max_target_length is not None:
            positive["max_target_length"] = self.max_target_length
        if self.max_steps <= 0:
            positive["num_train_epochs"] = self.num_train_epochs
        for name, value in positive.items():
            if not value > 0:
                problems.append(f"--{name.replace('_', '-')} {value}: must be positive")
        for name in ("eval_limit", "eval_steps"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                problems.append(f"--{name.replace('_', '-')} {value}: must be a positive number of "
                                f"{'rows' if name == 'eval_limit' else 'steps'}")
        if self.lora_r < 0 or self.lora_alpha <= 0 or not 0 <= self.lora_dropout < 1:
            problems.append(f"--lora-r {self.lora_r}, --lora-alpha {self.lora_alpha}, --lora-dropout {self.lora_dropout}: "
                            "the rank must be >= 0 (0: no LoRA), alpha > 0 and the dropout in [0, 1)")
        if not self.lora_target_modules.strip():
            problems.append("--lora-target-modules: give module names (q_proj,v_proj) or all-linear")
        if not 0 <= self.warmup_ratio <= 1:
            problems.append(f"--warmup-ratio {self.warmup_ratio}: must be between 0 and 1")
        if self.weight_decay < 0 or self.max_grad_norm <= 0:
            problems.append("--weight-decay must be >= 0 and --max-grad-norm > 0")
        schedulers = [kind.value for kind in SchedulerType]
        if self.lr_scheduler_type not in schedulers:
            problems.append(f"--lr-scheduler-type {self.lr_scheduler_type}: unknown; one of {', '.join(schedulers)}")
        if self.eval_strategy not in ("epoch", "steps", "no"):
            problems.append(f"--eval-strategy {self.eval_strategy}: one of epoch, steps, no")
        if self.eval_strategy == "steps" and not self.eval_steps:
            problems.append("--eval-strategy steps needs --eval-steps N")
        output = Path(self.output_dir)
        for folder in [output, *output.parents]:
            if folder.exists() and not folder.is_dir():
                problems.append(f"--output-dir {self.output_dir}: {folder} is a file, not a folder")
                break
        return problems

    def check(self) -> None:
        """Raise :class:`InputError` listing every problem (:meth:`problems`)."""
        problems = self.problems()
        if problems:
            raise InputError("; ".join(problems))

    def hyperparameters(self) -> dict[str, Any]:
        """The :data:`HYPERPARAMETERS` a model card records."""
        return {name: getattr(self, name) for name in HYPERPARAMETERS}


def train_parser(prog: str = "symgen train") -> argparse.ArgumentParser:
    """``symgen train``'s parser: one flag per :class:`TrainConfig` field."""
    parser = argparse.ArgumentParser(prog=prog, description="Fine-tune a small task model on a symgen dataset "
                                     "(Accelerate), evaluating on real dev data each epoch and keeping the best.")
    add_dataclass_arguments(parser, TrainConfig)
    return parser


def overrides_of(flags: list[str]) -> dict[str, Any]:
    """The :class:`TrainConfig` values that ``flags`` (training flags as ``symgen train`` takes
    them, e.g. ``["--max-steps", "60"]``) set, by field name; nothing else.

    Raises:
        InputError: a flag that is not one of ``symgen train``'s, or a bad value (named).
    """
    parser = argparse.ArgumentParser(prog="training flags", add_help=False, exit_on_error=False)
    add_dataclass_arguments(parser, TrainConfig, exclude=("dataset", "output_dir"), only_given=True)
    try:
        given, extra = parser.parse_known_args(flags)
    except argparse.ArgumentError as error:
        raise InputError(f"training flags {' '.join(flags)!r}: {error} (see `symgen train --help`)") from None
    if extra:
        raise InputError(f"training flags: unknown {' '.join(extra)} (see `symgen train --help`; task options go "
                         "before them)")
    return vars(given)

