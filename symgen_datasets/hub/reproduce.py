"""``symgen reproduce``: re-derive a published task model's numbers from the published artifacts.

The model card's ``symgen`` block records the task and its options, the evaluation references
(the task's packaged dev set, or a file, with its sha256 and the row limit), the generation batch,
every metric of the best evaluation and the sha256 of each weight file. Reproduction downloads
the model at the revision, checks that the weight files and the references are the same bytes
(by hash; exit 2 when they differ or cannot be read), evaluates again with ``symgen evaluate``'s
code and compares metric by metric with every number the card shows: the ``symgen`` block, the
``model-index`` and the results table. With ``retrain``, the model is also trained again from the card's
dataset (Hub id at its recorded commit, or the same file) and hyper-parameters, and evaluated the
same way.
"""

from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InputError


@dataclass
class ReproduceReport:
    """Reported and reproduced metrics of a task model.

    Attributes:
        source: the model folder or ``REPO_ID@REVISION``.
        revision: the commit evaluated (Hub), or ``None`` for a folder.
        task: the task.
        reported: the card's metrics (its best evaluation).
        reproduced: the metrics measured now.
        retrained: the metrics of the model trained again (``retrain``), else ``None``.
        tolerance: the largest accepted difference.
        references: what was evaluated on (file, sha256, rows).
        shown: the metrics the card shows to readers, by place (``model-index``, ``table``).
        weights: how the weights were checked (a sentence).
    """

    source: str
    revision: str | None
    task: str
    reported: dict[str, float]
    reproduced: dict[str, float]
    tolerance: float
    references: dict[str, Any] = field(default_factory=dict)
    retrained: dict[str, float] | None = None
    shown: dict[str, dict[str, float]] = field(default_factory=dict)
    weights: str = ""

    def differences(self, measured: dict[str, float] | None) -> list[str]:
        """The metrics of ``measured`` that differ beyond the tolerance (or are missing) from the
        reported ones, or from any number the card shows (named ``place:metric``)."""
        if measured is None:
            return []
        found = [name for name, value in self.reported.items()
                 if name not in measured or abs(measured[name] - value) > self.tolerance]
        for place, metrics in self.shown.items():
            found += [f"{place}:{name}" for name, value in metrics.items()
                      if name not in measured or abs(measured[name] - value) > self.tolerance]
        return found

    @property
    def reproduced_ok(self) -> bool:
        """Every reported metric reproduced (and re-trained, when asked) within the tolerance."""
        return not self.differences(self.reproduced) and not self.differences(self.retrained)


def _numbers(record: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in record.items() if k not in ("epoch", "step") and isinstance(v, (int, float))}


class WeightsMismatch(InputError):
    """The model's weight files are not the ones the card records, or cannot be read."""


def check_weights(folder: Path, training: dict[str, Any]) -> str:
    """Compare the weight files of ``folder`` with the card's ``weights_sha256``.

    Returns:
        What was checked (a sentence for the report).

    Raises:
        WeightsMismatch: a recorded file is missing, unreadable or has another digest.
    """
    from ..pipeline.evaluate import file_sha256

    recorded = training.get("weights_sha256") or {}
    if not recorded:
        return "the card records no digest of its weight files (trained by an older version): weights not checked"
    for name, digest in sorted(recorded.items()):
        path = folder / name
        try:
            found = file_sha256(path)
        except OSError as error:
            raise WeightsMismatch(f"{path}: cannot read the weights the card records ({error.strerror or error})") from None
        if found != digest:
            raise WeightsMismatch(f"{path}: sha256 {found} is not the {digest} the card records: these are not the "
                                  "weights that were evaluated (tampered with, truncated or replaced)")
    return f"weights match the card ({', '.join(sorted(recorded))}, sha256)"


def shown_metrics(card_text: str) -> dict[str, dict[str, float]]:
    """The metrics a model card shows to readers: its ``model-index`` values and its results
    table (``| name | value |`` rows under "Results on real dev data")."""
    from huggingface_hub import ModelCard

    shown: dict[str, dict[str, float]] = {}
    data = ModelCard(card_text).data
    index = {r.metric_type: float(r.metric_value) for r in (data.eval_results or []) if isinstance(r.metric_value, (int, float))}
    if index:
        shown["model-index"] = index
    body = card_text.split("## Results on real dev data", 1)
    if len(body) == 2:
        section = body[1].split("\n## ", 1)[0]
        table = {}
        for match in re.finditer(r"^\| (\w[\w@]*)(?: \(primary\))? \| (-?[0-9.]+) \|", section, flags=re.M):
            table.setdefault(match.group(1), float(match.group(2)))
        if table:
            shown["table"] = table
    return shown


def _references(task, recorded: dict[str, Any], given: str | None) -> Path:
    """The references to evaluate on, checked against the card's hash.

    Raises:
        InputError: the card names no evaluation, the file is missing, or its hash differs.
    """
    from ..pipeline.evaluate import file_sha256

    if not recorded.get("sha256"):
        raise InputError("the card records no evaluation (trained with --eval-strategy no): nothing to reproduce")
    if given is not None:
        path = Path(given)
    elif recorded.get("packaged"):
        path = task.references_path()
    else:
        raise InputError(f"the card's evaluation used the file {recorded.get('file')!r} (sha256 {recorded['sha256']}); "
                         "pass that file with --references")
    digest = file_sha256(path)
    if digest != recorded["sha256"]:
        raise InputError(f"{path}: sha256 {digest} is not the {recorded['sha256']} of the references the card reports "
                         f"({recorded.get('file')}); use the same file (the packaged dev set of another symgen version?)")
    return path


def reproduce(source: str, references: str | None = None, task_options: dict[str, Any] | None = None,
              tolerance: float = 0.005, retrain: bool = False, output_dir: str | Path | None = None,
              batch_size: int | None = None) -> ReproduceReport:
    """Evaluate a published task model again and compare with its card.

    Args:
        source: a model folder or ``REPO_ID[@REVISION]``.
        references: the evaluation file, when the card names one that is not packaged.
        task_options: the task's options (e.g. ``db_dir``, for databases that are not packaged).
        tolerance: the largest accepted difference of a metric.
        retrain: also train again from the card's settings and compare that model.
        output_dir: where the re-trained model goes (default: a temporary folder).
        batch_size: the generation batch (default: the card's evaluation batch).

    Raises:
        InputError: not a symgen task model, references that are not the card's, bad options.
        HubError: the Hub cannot be read.
    """
    from ..pipeline.evaluate import evaluate, model_predictions
    from ..publish.model_card import read_model_card
    from ..tasks import get_task
    from ..training.task_model import TaskModelConfig, download_model

    folder, revision = (Path(source), None) if Path(source).is_dir() else download_model(source)
    card = folder / "README.md"
    if not card.is_file():
        raise InputError(f"{source}: no README.md (model card); expected a model published by `symgen push-model`")
    card_text = card.read_text(encoding="utf-8")
    config = TaskModelConfig(**read_model_card(card_text, f"{source}:README.md"))
    training = config.training or {}
    weights = check_weights(folder, training)
    task = get_task(config.task)
    recorded = training.get("eval_references") or {}
    path = _references(task, recorded, references)
    batch = batch_size or (training.get("hyperparameters") or {}).get("per_device_eval_batch_size") or 16
    reported = _numbers(training.get("best") or {})

    def measure(model_source: str) -> dict[str, float]:
        try:
            predict, details = model_predictions(model_source, task, batch)
        except (OSError, ValueError, RuntimeError) as error:  # safetensors' own errors are among these
            raise WeightsMismatch(f"{model_source}: cannot load the model ({type(error).__name__}: "
                                  f"{str(error).splitlines()[0][:200] if str(error) else ''})") from None
        result = evaluate(task, predict, f"model:{model_source}", references=path, task_options=task_options,
                          limit=recorded.get("limit"), details=details)
        return dict(result.evaluation.metrics)

    reproduced = measure(str(folder))
    retrained = None
    if retrain:
        from ..training import train

        with tempfile.TemporaryDirectory(prefix="symgen-retrain-") as scratch:
            target = Path(output_dir) if output_dir else Path(scratch) / "model"
            train(retrain_config(config, target, path if references is not None else None, task_options))
            retrained = measure(str(target))
    return ReproduceReport(source, revision, config.task, reported, reproduced, tolerance,
                           {**recorded, "path": str(path)}, retrained, shown_metrics(card_text), weights)


def retrain_config(config, output_dir: Path, references: Path | None, task_options: dict[str, Any] | None):
    """The :class:`~symgen_datasets.training.TrainConfig` that repeats a model's training from its
    card: the dataset at its recorded commit, the base model, the hyper-parameters and the seed.

    Raises:
        InputError: the card's dataset was a local folder or file that cannot be found again.
    """
    from ..training.config import HYPERPARAMETERS, TrainConfig

    training = config.training or {}
    dataset = training.get("dataset") or {}
    if dataset.get("id"):
        source = f"{dataset['id']}@{dataset['commit']}"
    elif dataset.get("path") and Path(dataset["path"]).exists():
        source = dataset["path"]
    else:
        raise InputError("--retrain needs the training data: the card's dataset is "
                         f"{dataset.get('file') or dataset.get('path')!r}, which is not on the Hub (a local folder is "
                         "recorded by its name: run from the folder that holds it)")
    recorded = {name: value for name, value in (training.get("hyperparameters") or {}).items()
                if name in HYPERPARAMETERS and value is not None}
    return TrainConfig(dataset=source, task=config.task, model=config.base_model, output_dir=str(output_dir),
                       eval_references=str(references) if references is not None else None,
                       task_options=dict(task_options or {}), **recorded)


def format_report(report: ReproduceReport) -> str:
    """Reported and reproduced metrics side by side, and the verdict."""
    where = f"{report.source}" + (f" (commit {report.revision[:12]})" if report.revision else "")
    refs = report.references
    lines = [f"{where}: task {report.task}, evaluated on {refs.get('file')} ({refs.get('rows')} rows, "
             f"sha256 {str(refs.get('sha256'))[:12]}… matches the card)"]
    if report.weights:
        lines.append(report.weights)
    header = f"  {'metric':<22} {'reported':>9} {'reproduced':>11} {'diff':>8}"
    if report.retrained is not None:
        header += f" {'retrained':>10} {'diff':>8}"
    lines.append(header)
    for name, value in report.reported.items():
        now = report.reproduced.get(name)
        line = f"  {name:<22} {value:>9.4f} {now if now is not None else float('nan'):>11.4f} " \
               f"{(now - value) if now is not None else float('nan'):>+8.4f}"
        if report.retrained is not None:
            again = report.retrained.get(name)
            line += f" {again if again is not None else float('nan'):>10.4f} " \
                    f"{(again - value) if again is not None else float('nan'):>+8.4f}"
        lines.append(line)
    for place, metrics in report.shown.items():
        for name, value in metrics.items():
            now = report.reproduced.get(name)
            if now is None or abs(now - value) > report.tolerance:
                lines.append(f"  the card's {place} shows {name} {value:.4f}; reproduced "
                             f"{now if now is not None else float('nan'):.4f}")
    differ = sorted(set(report.differences(report.reproduced)) | set(report.differences(report.retrained)))
    lines.append(f"reproduced within {report.tolerance:g}" if not differ else
                 f"NOT reproduced: {', '.join(differ)} differ by more than {report.tolerance:g}")
    return "\n".join(lines)
