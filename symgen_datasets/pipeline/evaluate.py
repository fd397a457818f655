"""``symgen evaluate``: score predictions of a task's programs against real references.

Predictions come from one of three sources, each a function of this module: a JSON Lines file
(:func:`read_predictions`), an LLM prompted few-shot with the task's demonstrations, as SymGen
reports an LLM's own score (:func:`few_shot_predictions`), or a trained task model
(:func:`symgen_datasets.training.predict.model_predictions`). The task scores them
(:meth:`Task.evaluate <symgen_datasets.tasks.base.Task.evaluate>`); :func:`evaluate` runs the
whole, and writes ``metrics.json`` and ``predictions.jsonl`` side by side, the folder whole or not
at all.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from .. import __version__
from ..errors import InputError
from ..generators import EventLoopThread, Generator, SamplingParams, derive_seed, sample_many
from ..io import read_records
from ..metrics import Evaluation
from ..tasks import Task, TaskKnowledge

#: Few-shot requests sent to the generator at once (each a batch of the progress bar).
REQUEST_BATCH = 64


@dataclass
class EvaluateResult:
    """What :func:`evaluate` measured.

    Attributes:
        task: the task's name.
        evaluation: the metrics, per row and by group.
        predictions: one program (or ``None``) per reference row.
        references: the reference rows, in order.
        references_file: the file read (the packaged dev set when none was given).
        references_sha256: SHA-256 of that file (what ``symgen reproduce`` checks).
        source: where the predictions come from (``predictions:FILE``, ``generator:SPEC``,
            ``model:PATH``).
        output: the folder written (``metrics.json``, ``predictions.jsonl``), if any.
    """

    task: str
    evaluation: Evaluation
    predictions: list[str | None]
    references: list[dict]
    references_file: Path
    references_sha256: str
    source: str
    packaged_references: bool = False
    limit: int | None = None
    output: Path | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def metrics_document(self) -> dict[str, Any]:
        """The content of ``metrics.json``: the task, its metrics (primary first), the breakdown,
        and what was evaluated (references file and hash, prediction source)."""
        return {
            "task": self.task,
            "primary_metric": self.evaluation.primary,
            "metrics": self.evaluation.as_dict(),
            "references": {"file": self.references_file.name if self.packaged_references else str(self.references_file),
                           "packaged": self.packaged_references, "sha256": self.references_sha256,
                           "rows": len(self.references), **({"limit": self.limit} if self.limit else {})},
            "source": self.source,
            **self.details,
            "symgen_datasets_version": __version__,
            "created": datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat(),
        }


def file_sha256(path: str | Path) -> str:
    """SHA-256 (hex) of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_predictions(path: str | Path, task: Task, count: int) -> list[str | None]:
    """Read predictions: JSON Lines (or a JSON array), one object per reference row, in order,
    with the task's answer field (e.g. Spider's ``query``; a classification task's ``label``: an
    id or a name); ``null`` or an empty string is no prediction.

    Raises:
        InputError: a malformed line, a row without the answer field or with a non-string value
            (naming the line), or not exactly ``count`` rows.
    """
    predictions: list[str | None] = []
    for where, record in read_records(path):
        if task.answer_field not in record:
            raise InputError(f"{where}: no field {task.answer_field!r}; each prediction row holds the program in "
                             f"{task.answer_field!r} (the task's answer field)")
        value = record[task.answer_field]
        allowed = (str, int) if task.model_type == "classification" else str  # a label id or name
        if value is not None and (not isinstance(value, allowed) or isinstance(value, bool)):
            expected = "a label id, a label name or null" if task.model_type == "classification" else "a string or null"
            raise InputError(f"{where}: {task.answer_field!r} is {type(value).__name__}; expected {expected}")
        predictions.append(None if value == "" else value)
    if len(predictions) != count:
        raise InputError(f"{path}: {len(predictions)} predictions for {count} reference rows; give one row per "
                         "reference row, in the same order")
    return predictions


def few_shot_predictions(task: Task, references: Sequence[dict], knowledge: TaskKnowledge, generator: Generator,
                         demonstrations: Sequence[dict], loop: EventLoopThread, seed: int = 0) -> list[str | None]:
    """The LLM's own predictions: each reference question in the task's answer prompt with the
    demonstrations (those with the same question left out, so that no question is its own
    example), greedy, one completion, read by :meth:`Task.parse_answer`.

    Raises:
        GenerationError: the generator failed for good.
        InputError: a prompt cannot fit the model.
    """
    from tqdm.auto import tqdm

    params = SamplingParams(0.0, task.sampling.answer_max_new_tokens, task.sampling.answer_stop)
    limit = generator.max_prompt_tokens(params.max_new_tokens)
    predictions: list[str | None] = []
    with tqdm(total=len(references), desc="predicting", unit="question") as bar:
        for start in range(0, len(references), REQUEST_BATCH):
            batch = references[start:start + REQUEST_BATCH]
            requests = []
            for offset, row in enumerate(batch):
                question = {name: row[name] for name in task.question_fields}
                demos = [d for d in demonstrations if d[task.question_field] != row[task.question_field]] or demonstrations
                prompt = task.answer_prompt(question, knowledge, demos, generator.count_tokens, limit)
                requests.append((prompt, params, [derive_seed(seed, "evaluate", start + offset)]))
            for row, completions in zip(batch, loop.run(sample_many(generator, requests))):
                question = {name: row[name] for name in task.question_fields}
                predictions.append(task.parse_answer(completions[0].text, question) if completions else None)
            bar.update(len(batch))
    return predictions


def evaluate(task: Task, predict: Callable[[list[dict], TaskKnowledge], list[str | None]], source: str,
             references: str | Path | None = None, task_options: dict[str, Any] | None = None,
             timeout_s: float | None = None, output_dir: str | Path | None = None,
             details: dict[str, Any] | None = None, limit: int | None = None) -> EvaluateResult:
    """Load the references, get predictions, score them, and write the result folder.

    Args:
        task: the task.
        predict: ``(reference rows, knowledge) -> predictions``, one per row (e.g. a partial
            of :func:`few_shot_predictions`, or ``lambda rows, _: read_predictions(...)``).
        source: what made the predictions, recorded in ``metrics.json``.
        references: the real rows (default: the task's packaged dev set).
        task_options: the task's options (e.g. ``db_dir``).
        timeout_s: the time limit of executing one prediction (default: the task's).
        output_dir: where ``metrics.json`` and ``predictions.jsonl`` go; ``None`` writes nothing.
        details: more keys for ``metrics.json`` (e.g. the model and its revision).
        limit: evaluate on the first ``limit`` reference rows only.

    Raises:
        InputError: bad references, predictions or options (naming the file and line).
    """
    packaged = references is None
    knowledge = task.load_knowledge(task.options_with_defaults(task_options))
    try:
        rows = task.load_references(references, knowledge)[:limit]
        path = Path(references) if references is not None else task.references_path()
        knowledge.prepare({name: row[name] for name in task.context_fields} for row in rows)
        predictions = predict(rows, knowledge)
        kwargs = {} if timeout_s is None else {"timeout_s": timeout_s}
        evaluation = task.evaluate(rows, predictions, knowledge, **kwargs)
    finally:
        knowledge.cleanup()
    result = EvaluateResult(task.name, evaluation, list(predictions), rows, path, file_sha256(path), source,
                            packaged_references=packaged, limit=limit, details=dict(details or {}))
    if output_dir is not None:
        result.output = write_evaluation(result, output_dir, task)
    return result


def model_predictions(source: str, task: Task, batch_size: int = 16):
    """A ``predict`` function for :func:`evaluate` backed by a task model (a folder or a Hub model
    ``REPO_ID[@REVISION]``, trained by ``symgen train``), on the GPU when there is one.

    Returns:
        ``(predict, details)``: ``details`` names the model, its revision and base model.

    Raises:
        InputError: not a task model, or a model of another task.
        HubError: the Hub cannot be read.
    """
    import torch

    from ..training.task_model import load_task_model, predict

    model, tokenizer, config, folder, revision = load_task_model(source)
    if config.task != task.name:
        raise InputError(f"{source}: a model of the task {config.task}, not {task.name}")
    model.to("cuda" if torch.cuda.is_available() else "cpu")

    def run(rows: list[dict], knowledge: TaskKnowledge) -> list[str | None]:
        return predict(model, tokenizer, task, rows, knowledge, config, batch_size=batch_size)

    return run, {"model": {"source": source, "revision": revision, "base_model": config.base_model,
                           "architecture": config.architecture, "batch_size": batch_size}}


def write_evaluation(result: EvaluateResult, output_dir: str | Path, task: Task) -> Path:
    """Write ``metrics.json`` and ``predictions.jsonl`` (per reference row: its fields, the
    prediction under ``prediction``, and the per-row judgement) into ``output_dir``, whole or not
    at all; a folder already holding an evaluation is replaced.

    Raises:
        InputError: ``output_dir`` exists and is not an evaluation folder.
    """
    output = Path(output_dir)
    if output.exists() and not (output / "metrics.json").is_file():
        raise InputError(f"{output}: exists and holds no metrics.json; choose a new --output-dir")
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = output.parent / f".{output.name}.partial-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        with open(staging / "predictions.jsonl", "w", encoding="utf-8") as handle:
            for row, prediction, judged in zip(result.references, result.predictions, result.evaluation.per_row):
                handle.write(json.dumps({**row, "prediction": prediction, **judged}, ensure_ascii=False) + "\n")
        (staging / "metrics.json").write_text(json.dumps(result.metrics_document(), indent=2) + "\n", encoding="utf-8")
        if output.exists():
            shutil.rmtree(output)
        staging.rename(output)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return output


def format_evaluation(result: EvaluateResult) -> str:
    """The metrics as a few lines of text (and the breakdown as a table) for the terminal."""
    evaluation = result.evaluation
    refs = f"packaged dev set ({result.references_file.name})" if result.packaged_references else str(result.references_file)
    lines = [f"{result.task}: {len(result.references)} reference rows from {refs}; predictions from {result.source}"]
    for name, value in evaluation.metrics.items():
        marker = "  (primary)" if name == evaluation.primary else ""
        lines.append(f"  {name:<20} {value:.4f}{marker}")
    if evaluation.breakdown:
        names = [name for name in next(iter(evaluation.breakdown.values())) if name != "count"]
        lines.append("  " + "  ".join(["level".ljust(8), "count".rjust(6)] + [n.rjust(len(n)) for n in names]))
        for level, values in evaluation.breakdown.items():
            cells = [f"{values.get(n, float('nan')):.4f}".rjust(len(n)) for n in names]
            lines.append("  " + "  ".join([level.ljust(8), str(int(values["count"])).rjust(6)] + cells))
    if result.output is not None:
        lines.append(f"wrote {result.output / 'metrics.json'} and {result.output / 'predictions.jsonl'}")
    return "\n".join(lines)
