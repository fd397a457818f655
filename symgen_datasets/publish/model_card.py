"""Model cards of task models: rendered from ``hub_cards/model_card.md`` and the model's
``symgen_task_model.json`` (:class:`~symgen_datasets.training.task_model.TaskModelConfig`).

The card's YAML header holds the Hub's fields (``base_model``, ``datasets``, ``license``, ``tags``
and a ``model-index`` with the metrics on real dev data) and a ``symgen`` block: the whole
training record (task, options, dataset id and commit, hyper-parameters, evaluation references
and their hash, every evaluation, the best), from which ``symgen reproduce`` re-derives each
number. The card is a pure function of that record, so ``symgen push-model`` re-renders it with
the repository id and version. The evaluation curve is ``eval_curve.png`` beside it.
"""

from __future__ import annotations

from dataclasses import asdict
from importlib import resources
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..redaction import redact_record

#: The Hub model the embedded generator model is a (de-quantised Q4_1) copy of.
EMBEDDED_BASE = "HuggingFaceTB/SmolLM2-135M-Instruct"
CURVE_FILE = "eval_curve.png"


def task_card_block(task) -> dict[str, Any]:
    """What a task says about itself for a model card (so that rendering needs no task)."""
    return {
        "pretty_name": task.pretty_name.split(" (")[0],
        "license": task.license,
        "tags": list(task.tags),
        "family": task.family,
        "question_field": task.question_field,
        "answer_field": task.answer_field,
        "source_datasets": list(task.source_datasets),
        "input_description": f"`{task.question_field}`" + (f" and its context ({', '.join(f'`{c}`' for c in task.context_fields)})"
                                                          if task.context_fields else ""),
    }


def plot_eval_curve(history: list[dict], primary: str, path: str | Path) -> bool:
    """Plot the primary metric (and the others) of every evaluation against the optimizer step
    into ``path`` (PNG). Returns ``False`` (and writes nothing) without evaluations."""
    if not history:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [record["step"] for record in history]
    names = [primary] + [k for k, v in history[0].items() if k not in (primary, "epoch", "step") and isinstance(v, float)]
    figure, axis = plt.subplots(figsize=(6, 3.6), dpi=110)
    for name in names:
        axis.plot(steps, [record.get(name) for record in history], marker="o", linewidth=2.2 if name == primary else 1,
                  label=name)
    axis.set_xlabel("optimizer step")
    axis.set_ylabel("dev score")
    axis.set_ylim(0, 1.02)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    axis.set_title("evaluation on real dev data")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return True


def _references_text(references: dict[str, Any], task_name: str) -> str:
    rows = f"{references.get('rows')} rows" if references.get("rows") else "rows"
    where = f"the packaged dev set of `{task_name}` (`{references.get('file')}`)" if references.get("packaged") \
        else f"`{references.get('file')}`"
    digest = f", sha256 `{references['sha256'][:16]}…`" if references.get("sha256") else ""
    return f"{where}, {rows}{digest}"


def render_model_card(config: Any, repo_id: str, revision: str | None = None, version: str | None = None,
                      has_curve: bool = True) -> str:
    """The README.md of a task model folder.

    Args:
        config: the model's :class:`~symgen_datasets.training.task_model.TaskModelConfig`.
        repo_id: the repository id (or local path) shown in the examples.
        revision: the revision shown (e.g. ``v1.0.0``), if any.
        version: the version, if published.

    Raises:
        InputError: the configuration holds no training record (not trained by ``symgen train``).
    """
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    training = redact_record(config.training or {})
    if not training.get("task_card"):
        raise InputError(f"{repo_id}: symgen_task_model.json holds no training record; train with `symgen train`")
    task_card = training["task_card"]
    best = training.get("best") or {}
    best_metrics = {k: v for k, v in best.items() if k not in ("epoch", "step", "breakdown") and isinstance(v, (int, float))}
    baseline_doc = training.get("baseline") or None
    baseline = (baseline_doc or {}).get("metrics") if baseline_doc else None
    baseline_name = ((baseline_doc or {}).get("generator") or {}).get("model") or (baseline_doc or {}).get("source", "")
    base_model_id = EMBEDDED_BASE if config.base_model == "embedded" else config.base_model
    dataset = training.get("dataset") or {}
    title = repo_id.split("/")[-1]
    dataset_type = next((s for s in task_card["source_datasets"] if "/" in s and " " not in s), config.task)
    references = training.get("eval_references") or {}
    eval_results = [
        EvalResult(task_type="text-generation", task_name=task_card["pretty_name"], dataset_type=dataset_type,
                   dataset_name=f"{task_card['pretty_name']} dev ({references.get('rows', '?')} rows)",
                   dataset_split="validation", metric_type=name, metric_name=name, metric_value=round(float(value), 4))
        for name, value in best_metrics.items()
    ]
    card_data = ModelCardData(
        language=["en"], license=task_card["license"], library_name="peft" if config.adapter else "transformers",
        base_model=base_model_id if "/" in base_model_id and not Path(base_model_id).exists() else None,
        datasets=[dataset["id"]] if dataset.get("id") else None,
        tags=["symgen", "synthetic-data", config.task, *task_card["tags"], *(["lora"] if config.adapter else [])],
        pipeline_tag="text2text-generation" if config.architecture == "seq2seq" else "text-generation",
        model_name=title, eval_results=eval_results or None, symgen=redact_record(asdict(config)),
    )
    template = resources.files("symgen_datasets.hub_cards").joinpath("model_card.md").read_text()
    card = ModelCard.from_template(
        card_data, template_str=template, title=title, t={**training, "primary_metric": training.get("primary_metric")},
        config={**asdict(config), "base_model_id": base_model_id}, best_metrics=best_metrics,
        best_breakdown=best.get("breakdown") or {}, baseline=baseline, baseline_name=baseline_name,
        references_text=_references_text(references, config.task), repo_id=repo_id, revision=revision, version=version,
        has_curve=has_curve,
    )
    return str(card)


def write_model_card(folder: str | Path, config: Any, repo_id: str | None = None, revision: str | None = None,
                     version: str | None = None) -> Path:
    """Write ``eval_curve.png`` and ``README.md`` into a task model folder; returns the card's path."""
    folder = Path(folder)
    training = config.training or {}
    has_curve = plot_eval_curve(training.get("history") or [], training.get("primary_metric") or "", folder / CURVE_FILE)
    # a local card names its folder by name (relative), never the machine's path
    text = render_model_card(config, repo_id or folder.resolve().name, revision, version, has_curve)
    path = folder / "README.md"
    path.write_text(text, encoding="utf-8")
    return path


def read_model_card(text: str, where: str) -> dict[str, Any]:
    """The ``symgen`` block (the task model configuration) of a model card's text, credentials
    redacted.

    Raises:
        InputError: the card has no ``symgen`` block (not a symgen task model).
    """
    from huggingface_hub import ModelCard

    data = ModelCard(text).data.to_dict()
    if not isinstance(data.get("symgen"), dict):
        raise InputError(f"{where}: not a symgen task model card (no `symgen` block in its YAML header)")
    return redact_record(data["symgen"])
