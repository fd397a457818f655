"""``symgen verify``: recompute a published dataset's kept rows from its candidates, with no LLM.

The ``candidates`` config holds every sampled program of every question with its stored outcome.
Re-verification reads the parquet files the card names (from a folder, or from the Hub at a
revision), runs the same agreement-based verifier as ``symgen generate`` on every question (the
card's task's verifier, in worker processes, each distinct program once, on the task's knowledge,
e.g. snapshots of its databases; majority vote; threshold V from the card), and compares, question
by question, the
stored outcome of every candidate (``candidate_status``, ``candidate_result``) and the kept set
with the published ``default`` config. Candidates are streamed: memory does not grow with the
dataset.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import pyarrow as pa
import pyarrow.parquet as pq
from huggingface_hub import HfApi, hf_hub_download
from huggingface_hub.errors import EntryNotFoundError

from ..errors import InputError
from ..pipeline.stages import StageContext, verify_stream
from ..publish import read_folder_card
from ..tasks import Task, get_task
from .push import card_at, hub_errors, repo_reference


@dataclass
class VerifyReport:
    """The outcome of re-verification.

    Attributes:
        source: the folder or ``REPO_ID@REVISION`` checked.
        published: rows in the published ``default`` config.
        recomputed: rows the verifier keeps from the published candidates.
        differences: one line per row that is missing, extra, or has another program or vote
            count, and per question whose stored candidate outcomes differ from the recomputed
            ones.
        candidates_checked: candidates whose stored outcome was compared.
    """

    source: str
    published: int
    recomputed: int
    differences: list[str] = field(default_factory=list)
    candidates_checked: int = 0

    @property
    def identical(self) -> bool:
        return not self.differences


def _files_of(configs: list[dict], name: str, where: str) -> list[str]:
    """The data files the card names for config ``name``.

    Raises:
        InputError: the card has no such config.
    """
    for config in configs:
        if config.get("config_name") == name:
            files = config.get("data_files") or []
            paths = [entry["path"] if isinstance(entry, dict) else entry for entry in files]
            paths = [p for item in paths for p in (item if isinstance(item, list) else [item])]
            if paths:
                return paths
    raise InputError(
        f"{where}: the card names no {name!r} config; re-verification needs the published candidates "
        "(a folder written by `symgen generate` has them)"
    )


def _source(source: str) -> tuple[dict, list[dict], Callable[[str], Path], str]:
    """The card's ``symgen`` block and configs, a function that gives a local path for one of
    the card's files, and how to name the source in messages.

    Raises:
        InputError: neither a dataset folder nor a valid ``REPO_ID[@REVISION]``, or not a symgen card.
        HubError: the Hub cannot be read.
    """
    if Path(source).is_dir():
        meta, configs = read_folder_card(source)

        def local(path: str) -> Path:
            found = Path(source) / path
            if not found.is_file():
                raise InputError(f"{source}: {path} is missing (the card names it); the folder is incomplete")
            return found

        return meta, configs, local, source
    if Path(source).exists() or source.startswith((".", "/", "~")):
        raise InputError(f"{source}: no such dataset folder; give a folder written by `symgen generate` or REPO_ID[@REVISION]")
    repo_id, revision = repo_reference(source, "a dataset folder")
    revision = revision or "main"
    with hub_errors(f"reading {source}"):
        meta, configs = card_at(HfApi(), repo_id, revision)

    def remote(path: str) -> Path:
        with hub_errors(f"downloading {path} of {source}"):
            try:
                return Path(hf_hub_download(repo_id, path, repo_type="dataset", revision=revision))
            except EntryNotFoundError:
                raise InputError(f"{source}: {path} is missing (the card names it)") from None

    return meta, configs, remote, f"{repo_id}@{revision}"


def _batches(files: list[Path], columns: list[str]) -> Iterator[pa.RecordBatch]:
    """The record batches of parquet ``files`` with ``columns``.

    Raises:
        InputError: a file is not readable parquet or lacks a column.
    """
    for path in files:
        try:
            parquet = pq.ParquetFile(path)
            missing = [name for name in columns if name not in parquet.schema_arrow.names]
            if missing:
                raise InputError(f"{path}: no column {', '.join(missing)}; not a symgen dataset file")
            yield from parquet.iter_batches(batch_size=1000, columns=columns)
        except (pa.ArrowException, OSError) as error:
            raise InputError(f"{path}: cannot read the parquet file ({error}); it is damaged: download or generate it again") from None


def _rows(files: list[Path], columns: list[str]) -> Iterator[dict]:
    for batch in _batches(files, columns):
        yield from batch.to_pylist()


def task_of(meta: dict, where: str) -> Task:
    """The task a card names (it must be installed).

    Raises:
        InputError: the card names no task, or one that is not installed.
    """
    if not isinstance(meta.get("task"), str):
        raise InputError(f"{where}: the symgen block names no task")
    return get_task(meta["task"])


def _label(task: Task, key: tuple) -> str:
    """A question for messages: ``[context] question``."""
    *context, question = key
    return f"[{', '.join(map(str, context))}] {question}" if context else question


def reverify(source: str, task_options: dict | None = None) -> VerifyReport:
    """Recompute the candidates' outcomes and the kept set of ``source`` and compare.

    Args:
        source: a dataset folder, or ``REPO_ID`` / ``REPO_ID@REVISION`` on the Hub.
        task_options: the task's own options (e.g. ``{"db_dir": ...}`` for text-to-SQL: the
            databases; default: the task's packaged knowledge).

    Returns:
        A :class:`VerifyReport`.

    Raises:
        InputError: not a symgen dataset, a file the card names is missing or damaged, the
            card's task is not installed, or the knowledge cannot serve a question (e.g. a
            missing database).
        HubError: the Hub cannot be read.
    """
    meta, configs, fetch, shown = _source(source)
    where = f"{shown} (README.md)"
    task = task_of(meta, where)
    settings = meta.get("settings") or {}
    if not isinstance(settings.get("min_votes"), int) or not isinstance(settings.get("timeout_s"), (int, float)):
        raise InputError(f"{where}: the symgen block has no settings.min_votes and settings.timeout_s")
    row_files = [fetch(path) for path in _files_of(configs, "default", where)]
    candidate_files = [fetch(path) for path in _files_of(configs, "candidates", where)]
    key_fields = [*task.context_fields, task.question_field]
    # a question may appear more than once (dev sets repeat some): rows per question, in order
    published: dict[tuple, list[tuple[str, int]]] = {}
    for r in _rows(row_files, [*key_fields, task.answer_field, "votes"]):
        published.setdefault(tuple(r[name] for name in key_fields), []).append((r[task.answer_field], r["votes"]))

    knowledge = task.load_knowledge(task.options_with_defaults(task_options))
    contexts = {}
    for row in _rows(candidate_files, list(task.context_fields) or [task.question_field]):
        context = {name: row[name] for name in task.context_fields}
        if tuple(context.values()) not in contexts:
            knowledge.check_record(context, f"{shown} (candidates config)")
            contexts[tuple(context.values())] = context
    knowledge.prepare(contexts.values())
    recomputed: dict[tuple, list[tuple[str, int]]] = {}
    differences: list[str] = []
    checked = 0
    columns = [*task.question_fields, *task.auxiliary_fields, "candidates", "candidate_logprobs", "candidate_status",
               "candidate_result"]

    def questions() -> Iterator[dict]:  # the stored outcomes under other names: verify_stream adds its own
        for row in _rows(candidate_files, columns):
            row["stored"] = list(zip(row.pop("candidate_status"), row.pop("candidate_result")))
            yield row

    with task.make_verifier(knowledge, settings["timeout_s"]) as verifier, _cleaned(knowledge):
        verifier.configure(meta.get("verifier") or {})  # the rule the dataset was made under
        context = StageContext(task=task, knowledge=knowledge, verifier=verifier)
        for row in verify_stream(context, questions()):
            checked += len(row["candidates"])
            outcomes = list(zip(row["candidate_status"], row["candidate_result"]))
            changed = [i for i, (before, after) in enumerate(zip(row["stored"], outcomes)) if before != after]
            if changed or len(row["stored"]) != len(outcomes):
                i = changed[0] if changed else min(len(row["stored"]), len(outcomes))
                before = row["stored"][i] if i < len(row["stored"]) else ("(none)", None)
                recomputed_outcome = outcomes[i] if i < len(outcomes) else ("(none)", None)
                differences.append(
                    f"{_label(task, tuple(row[name] for name in key_fields))}: {len(changed) or 'some'} of {len(outcomes)} "
                    f"candidate outcomes differ; candidate {i}: published {_outcome(before)}, recomputed {_outcome(recomputed_outcome)}"
                )
            if row["votes"] >= settings["min_votes"]:
                recomputed.setdefault(tuple(row[name] for name in key_fields), []).append((row[task.answer_field], row["votes"]))

    for key in sorted(set(published) | set(recomputed)):
        ours, theirs = published.get(key, []), recomputed.get(key, [])
        for (answer_a, votes_a), (answer_b, votes_b) in zip(ours, theirs):
            if (answer_a, votes_a) != (answer_b, votes_b):
                differences.append(
                    f"{_label(task, key)}: published {answer_a!r} ({votes_a} votes), recomputed {answer_b!r} ({votes_b} votes)"
                )
        for _ in ours[len(theirs):]:
            differences.append(f"published but not kept by re-verification: {_label(task, key)}")
        for _ in theirs[len(ours):]:
            differences.append(f"kept by re-verification but not published: {_label(task, key)}")
    count = lambda rows: sum(len(items) for items in rows.values())  # noqa: E731
    return VerifyReport(shown, count(published), count(recomputed), differences, checked)


@contextmanager
def _cleaned(knowledge) -> Iterator[None]:
    """Run the block, then release what the knowledge prepared (database snapshots)."""
    try:
        yield
    finally:
        knowledge.cleanup()


def _outcome(outcome: tuple[str, str | None]) -> str:
    status, key = outcome
    return f"{status} {key[:12]}" if key else status
