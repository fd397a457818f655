"""``symgen verify``: recompute a published dataset's kept rows from its candidates, with no LLM.

The ``candidates`` config holds every sampled program of every question. Re-verification runs the
same agreement-based verifier as ``symgen generate`` (each distinct program executed once,
read-only and time-limited, on the task's databases; majority vote; threshold V from the card)
and compares the recomputed kept set with the published ``default`` config, row by row.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import datasets
from huggingface_hub import HfApi

from ..errors import InputError
from ..pipeline.stages import StageContext, select, verify
from ..tasks import get_task
from ..verifiers import SQLiteExecutor
from .card import read_folder_card
from .push import card_at, hub_errors


@dataclass
class VerifyReport:
    """The outcome of re-verification.

    Attributes:
        source: the folder or ``REPO_ID@REVISION`` checked.
        published: rows in the published ``default`` config.
        recomputed: rows the verifier keeps from the published candidates.
        differences: one line per row that is missing, extra, or has another query or vote count.
    """

    source: str
    published: int
    recomputed: int
    differences: list[str] = field(default_factory=list)

    @property
    def identical(self) -> bool:
        return not self.differences


def _load(source: str) -> tuple[dict, datasets.Dataset, datasets.Dataset]:
    """The card's ``symgen`` block, the kept rows and the candidates of a folder or a Hub repo."""
    if Path(source).is_dir():
        meta, _ = read_folder_card(source)

        def load(config: str) -> datasets.Dataset:
            return datasets.load_dataset(str(source), config, split="train")

        return meta, load("default"), load("candidates")
    repo_id, _, revision = source.partition("@")
    if repo_id.count("/") != 1:
        raise InputError(f"{source}: expected a dataset folder or REPO_ID[@REVISION] such as symgen/spider-synth@v1.0.0")
    with hub_errors(f"reading {source}"):
        meta, _ = card_at(HfApi(), repo_id, revision or "main")

        def load_hub(config: str) -> datasets.Dataset:
            return datasets.load_dataset(repo_id, config, revision=revision or None, split="train")

        return meta, load_hub("default"), load_hub("candidates")


def reverify(source: str, db_dir: str | None = None, max_workers: int | None = None) -> VerifyReport:
    """Recompute the kept set of ``source`` from its candidates and compare.

    Args:
        source: a dataset folder, or ``REPO_ID`` / ``REPO_ID@REVISION`` on the Hub.
        db_dir: the databases (``<db_id>/<db_id>.sqlite``); default: the task's packaged ones.
        max_workers: executor worker processes (default: CPU cores).

    Returns:
        A :class:`VerifyReport`.

    Raises:
        InputError: not a symgen dataset, or a database is missing.
        HubError: the Hub cannot be read.
    """
    meta, rows, candidates = _load(source)
    task = get_task(meta["task"])
    databases = task.databases(db_dir)
    for db_id in sorted(set(candidates["db_id"])):
        databases.get(db_id, f"{source} (candidates config)")
    settings = meta["settings"]
    with SQLiteExecutor(max_workers=max_workers, timeout_s=settings["timeout_s"]) as executor:
        context = StageContext(task=task, databases=databases, executor=executor)
        revoted = candidates.select_columns(["question", "db_id", "candidates", "candidate_logprobs"]).map(
            verify, batched=True, batch_size=1000, fn_kwargs={"context": context}, desc="re-verification",
            # keyed by the candidates' own (content-derived) fingerprint: new candidates, new cache
            new_fingerprint=f"reverify-{candidates._fingerprint}",
        )
    kept = revoted.filter(select, batched=True, fn_kwargs={"min_votes": settings["min_votes"]})

    published = {(r["db_id"], r["question"]): (r["query"], r["votes"]) for r in rows}
    recomputed = {(r["db_id"], r["question"]): (r["query"], r["votes"]) for r in kept}
    differences = []
    for key in sorted(set(published) | set(recomputed)):
        db_id, question = key
        if key not in recomputed:
            differences.append(f"published but not kept by re-verification: [{db_id}] {question}")
        elif key not in published:
            differences.append(f"kept by re-verification but not published: [{db_id}] {question}")
        elif published[key] != recomputed[key]:
            (query_a, votes_a), (query_b, votes_b) = published[key], recomputed[key]
            differences.append(
                f"[{db_id}] {question}: published {query_a!r} ({votes_a} votes), recomputed {query_b!r} ({votes_b} votes)"
            )
    return VerifyReport(source, len(published), len(recomputed), differences)
