"""Dataset cards: rendered from ``hub_cards/dataset_card.md`` and a ``symgen`` metadata block.

The card's YAML header holds, next to the Hub's fields (license, configs, ...), a ``symgen``
block with everything about the run (task, generator, settings, verifier, demonstrations hash,
prompt template hashes, counts per stage, vote histogram, version and parent) and what the task
says about its data (the ``dataset`` entry: title, license, tags, columns). The card is a pure
function of that block, so ``symgen push`` re-renders it with the repository id and version
without the task being installed, and ``symgen versions`` / ``symgen verify`` read runs back
from it.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from huggingface_hub import DatasetCard, DatasetCardData

from ..errors import InputError
from ..redaction import redact_record

if TYPE_CHECKING:
    from ..pipeline.columns import Columns
    from ..tasks import Task


def dataset_block(task: "Task", columns: "Columns") -> dict[str, Any]:
    """What a task says about its generated data, for the card: title, license, sources, Hub
    tags and categories, a summary, the fields and every column's meaning."""
    return {**_task_block(task),
            "columns": [{"name": name, "description": columns.row_descriptions.get(name, "")} for name in columns.row_names]}


def _task_block(task: "Task", extra_tags: tuple[str, ...] = ()) -> dict[str, Any]:
    """What a task says about itself in a card's ``dataset`` entry, columns aside."""
    return {
        "pretty_name": task.pretty_name,
        "license": task.license,
        "source_datasets": list(task.source_datasets),
        "tags": ["synthetic", *task.tags, "symgen", *extra_tags, task.name],
        "task_categories": list(task.task_categories),
        "summary": task.card_summary(),
        "family": task.family,
        "question_field": task.question_field,
        "answer_field": task.answer_field,
        "context_fields": list(task.context_fields),
    }


def s3_dataset_block(task: "Task") -> dict[str, Any]:
    """:func:`dataset_block` for the datasets of ``symgen s3`` rounds: the task's kept-row
    columns (label-conditioned tasks: the task's fields and ``generator``), and ``s3_round``."""
    block = _task_block(task, extra_tags=("s3",))
    block["pretty_name"] = task.pretty_name.replace("(synthetic, SymGen)", "(synthetic, S3)")
    if task.synthesis == "symgen":
        from ..pipeline.columns import Columns

        columns = Columns(task, getattr(task.verifier_class, "outcome_word", "valid"))
        names, descriptions = columns.row_names, columns.row_descriptions
    else:
        names = [*task.demonstration_fields, "generator"]
        descriptions = {name: task.describe_field(name) for name in task.demonstration_fields}
        descriptions["generator"] = "the LLM that wrote the row"
    block["columns"] = [{"name": name, "description": descriptions.get(name, "")} for name in names]
    block["columns"].append({"name": "s3_round", "description": "the S3 round that added the row (0: seed synthesis)"})
    return block


def size_category(n: int) -> str:
    """The Hub's ``size_categories`` value for ``n`` rows."""
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if n < limit:
            return name
    return "1M<n<10M"


def render_card(meta: dict[str, Any], configs: list[dict], repo_id: str, revision: str | None = None) -> str:
    """The README.md text of a dataset folder.

    Args:
        meta: the ``symgen`` metadata block (see :func:`symgen_datasets.pipeline.run.run_metadata`),
            with its ``dataset`` entry (:func:`dataset_block`).
        configs: the YAML ``configs:`` entries naming the data files.
        repo_id: the repository id (or local path) shown in the loading example.
        revision: the revision shown in the loading example (e.g. ``v1.1.0``), if any.
    """
    meta = redact_record(meta)
    dataset = meta["dataset"]
    card_data = DatasetCardData(
        language=["en"],
        license=dataset["license"],
        pretty_name=dataset["pretty_name"],
        task_categories=list(dataset["task_categories"]),
        size_categories=[size_category(meta["counts"].get("questions_kept", 0))],
        source_datasets=list(dataset["source_datasets"]),
        tags=list(dataset["tags"]),
        configs=configs,
        symgen=meta,
    )
    name = "s3_dataset_card.md" if meta.get("s3") else "dataset_card.md"  # an S3 round's own card
    template = resources.files("symgen_datasets.hub_cards").joinpath(name).read_text()
    card = DatasetCard.from_template(
        card_data, template_str=template, pretty_name=dataset["pretty_name"], meta=meta, dataset=dataset,
        repo_id=repo_id, revision=revision, s3=meta.get("s3") or {},
    )
    return str(card)


def read_card(text: str, where: str) -> tuple[dict[str, Any], list[dict]]:
    """The ``symgen`` block and the ``configs`` entries of a card's text, with every credential
    in them redacted (a card written by an older version or by hand may hold some).

    Raises:
        InputError: the card has no ``symgen`` block or no ``configs`` (not a symgen dataset).
    """
    data = DatasetCard(text).data.to_dict()
    if not isinstance(data.get("symgen"), dict) or not data.get("configs"):
        raise InputError(f"{where}: not a symgen dataset card (no `symgen` block or `configs` in its YAML header)")
    return redact_record(data["symgen"]), data["configs"]


def read_folder_card(folder: str | Path) -> tuple[dict[str, Any], list[dict]]:
    """:func:`read_card` of ``<folder>/README.md``.

    Raises:
        InputError: the folder has no README.md, or it is not a symgen card.
    """
    path = Path(folder) / "README.md"
    if not path.is_file():
        raise InputError(f"{folder}: no README.md; expected a dataset folder written by `symgen generate`")
    return read_card(path.read_text(encoding="utf-8"), str(path))
