"""``symgen verify``: recompute a published dataset's kept rows from its candidates, with no LLM.

The ``candidates`` config holds every sampled program of every question with its stored execution
outcome. Re-verification reads the parquet files the card names (from a folder, or from the Hub
at a revision), runs the same agreement-based verifier as ``symgen generate`` on every question
(each distinct program executed once, read-only and time-limited, on snapshots of the task's
databases; majority vote; threshold V from the card), and compares, question by question, the
stored outcome of every candidate (``candidate_status``, ``candidate_result``) and the kept set
with the published ``default`` config. Candidates are streamed: memory does not grow with the
dataset.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import pyarrow as pa
import pyarrow.parquet as pq
from huggingface_hub import HfApi, hf_hub_download
from huggingface_hub.errors import EntryNotFoundError, HFValidationError
from huggingface_hub.utils import validate_repo_id

from ..errors import InputError
from ..pipeline.stages import StageContext, verify_stream
from ..tasks import get_task
from ..verifiers import SQLiteExecutor
from .card import read_folder_card
from .push import card_at, hub_errors

#: The columns re-verification reads from each config.
_ROW_COLUMNS = ["question", "db_id", "query", "votes"]
_CANDIDATE_COLUMNS = ["question", "db_id", "candidates", "candidate_logprobs", "candidate_status", "candidate_result"]


@dataclass
class VerifyReport:
    """The outcome of re-verification.

    Attributes:
        source: the folder or ``REPO_ID@REVISION`` checked.
        published: rows in the published ``default`` config.
        recomputed: rows the verifier keeps from the published candidates.
        differences: one line per row that is missing, extra, or has another query or vote
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
    repo_id, _, revision = source.partition("@")
    try:
        validate_repo_id(repo_id)
    except HFValidationError:
        repo_id = ""
    if repo_id.count("/") != 1:
        raise InputError(f"{source}: neither a dataset folder nor REPO_ID[@REVISION] such as symgen/spider-synth@v1.0.0")
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


def reverify(source: str, db_dir: str | None = None, max_workers: int | None = None) -> VerifyReport:
    """Recompute the candidates' outcomes and the kept set of ``source`` and compare.

    Args:
        source: a dataset folder, or ``REPO_ID`` / ``REPO_ID@REVISION`` on the Hub.
        db_dir: the databases (``<db_id>/<db_id>.sqlite``); default: the task's packaged ones.
        max_workers: executor worker processes (default: CPU cores).

    Returns:
        A :class:`VerifyReport`.

    Raises:
        InputError: not a symgen dataset, a file the card names is missing or damaged, or a
            database is missing.
        HubError: the Hub cannot be read.
    """
    meta, configs, fetch, shown = _source(source)
    where = f"{shown} (README.md)"
    task = get_task(str(meta.get("task")))
    settings = meta.get("settings") or {}
    if not isinstance(settings.get("min_votes"), int) or not isinstance(settings.get("timeout_s"), (int, float)):
        raise InputError(f"{where}: the symgen block has no settings.min_votes and settings.timeout_s")
    row_files = [fetch(path) for path in _files_of(configs, "default", where)]
    candidate_files = [fetch(path) for path in _files_of(configs, "candidates", where)]
    published = {(r["db_id"], r["question"]): (r["query"], r["votes"]) for r in _rows(row_files, _ROW_COLUMNS)}

    databases = task.databases(db_dir)
    for batch in _batches(candidate_files, ["db_id"]):
        for db_id in set(batch.column("db_id").to_pylist()):
            databases.check(db_id, f"{shown} (candidates config)")
    recomputed: dict[tuple[str, str], tuple[str, int]] = {}
    differences: list[str] = []
    checked = 0

    def questions() -> Iterator[dict]:  # the stored outcomes under other names: verify_stream adds its own
        for row in _rows(candidate_files, _CANDIDATE_COLUMNS):
            row["stored"] = list(zip(row.pop("candidate_status"), row.pop("candidate_result")))
            yield row

    with SQLiteExecutor(max_workers=max_workers, timeout_s=settings["timeout_s"]) as executor:
        context = StageContext(task=task, databases=databases, executor=executor)
        for row in verify_stream(context, questions()):
            checked += len(row["candidates"])
            outcomes = list(zip(row["candidate_status"], row["candidate_result"]))
            changed = [i for i, (before, after) in enumerate(zip(row["stored"], outcomes)) if before != after]
            if changed or len(row["stored"]) != len(outcomes):
                i = changed[0] if changed else min(len(row["stored"]), len(outcomes))
                before = row["stored"][i] if i < len(row["stored"]) else ("(none)", None)
                differences.append(
                    f"[{row['db_id']}] {row['question']}: {len(changed) or 'some'} of {len(outcomes)} candidate outcomes differ; "
                    f"candidate {i}: published {_outcome(before)}, recomputed {_outcome(outcomes[i] if i < len(outcomes) else ('(none)', None))}"
                )
            if row["votes"] >= settings["min_votes"]:
                recomputed[(row["db_id"], row["question"])] = (row["query"], row["votes"])

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
    return VerifyReport(shown, len(published), len(recomputed), differences, checked)


def _outcome(outcome: tuple[str, str | None]) -> str:
    status, key = outcome
    return f"{status} {key[:12]}" if key else status
