"""Publish dataset folders to the Hub as immutable versions, and list the versions.

A version is a tag ``vX.Y.Z`` on the commit that uploaded the folder. ``push`` uploads a folder in
ONE commit (stale data files of the previous version are deleted in the same commit), then tags
it; an existing tag is never moved, so whoever pinned ``revision="v1.0.0"`` keeps their data.
The token comes from huggingface_hub's standard configuration (``HF_TOKEN`` or ``hf auth
login``) and is never printed or written.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi, hf_hub_download
from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError

from ..errors import InputError, SymgenError
from ..publish import config_dir, read_card, read_folder_card, render_card

_VERSION = re.compile(r"^(\d+)\.(\d+)\.(\d+)$")
_TAG = re.compile(r"^v(\d+)\.(\d+)\.(\d+)$")


class HubError(SymgenError):
    """A Hub request failed (network, authentication, permissions)."""


@contextlib.contextmanager
def hub_errors(what: str) -> Iterator[None]:
    """Turn huggingface_hub's HTTP errors into one clear :class:`HubError` for ``what``."""
    try:
        yield
    except RepositoryNotFoundError:
        raise HubError(f"{what}: repository not found (or private and your token cannot see it)") from None
    except HfHubHTTPError as error:
        status = getattr(error.response, "status_code", "?")
        if status == 412:
            raise HubError(f"{what}: the repository changed during this push (another push?); nothing of this one "
                           "was committed or tagged: push again") from None
        first = str(error).splitlines()[0]
        raise HubError(f"{what}: the Hub answered HTTP {status} ({first}); check HF_ENDPOINT and your token") from None
    except Exception as error:
        # connection failures: OSError, or the transport errors of huggingface_hub's HTTP client;
        # huggingface_hub wraps a failed upload (the Hub dying mid-push) in a RuntimeError
        if isinstance(error, (OSError, RuntimeError)) or type(error).__module__.split(".")[0].startswith("httpx"):
            first = (str(error).splitlines() or [type(error).__name__])[0][:300]
            raise HubError(f"{what}: cannot reach the Hub or it stopped answering ({first}); nothing was tagged: "
                           "check HF_ENDPOINT and the network, then push again") from None
        raise


def branch_head(api: HfApi, repo_id: str, branch: str, repo_type: str = "dataset") -> str | None:
    """The commit ``branch`` points at (``None`` for a repository or branch not there yet): a
    push commits on top of it with ``parent_commit`` pinned, so that two pushes at once never
    mix (the second is refused with HTTP 412 instead of recording the same parent)."""
    try:
        refs = api.list_repo_refs(repo_id, repo_type=repo_type)
    except RepositoryNotFoundError:
        return None
    return next((ref.target_commit for ref in refs.branches if ref.name == branch), None)


def repo_reference(source: str, what: str) -> tuple[str, str | None]:
    """``"namespace/name@revision"`` -> ``("namespace/name", "revision")`` (revision ``None``
    when absent).

    Raises:
        InputError: not a valid repository id; the message says ``source`` is neither ``what``
            nor a Hub reference.
    """
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    repo_id, _, revision = source.partition("@")
    try:
        validate_repo_id(repo_id)
    except HFValidationError:
        repo_id = ""
    if repo_id.count("/") != 1:
        raise InputError(f"{source}: neither {what} nor REPO_ID[@REVISION] on the Hub (e.g. symgen/spider-synth@v1.0.0)")
    return repo_id, revision or None


def parse_version(version: str) -> tuple[int, int, int]:
    """``"1.2.3"`` -> ``(1, 2, 3)``.

    Raises:
        InputError: not of the form X.Y.Z.
    """
    match = _VERSION.match(version)
    if not match:
        raise InputError(f"--version {version!r}: expected X.Y.Z, e.g. 1.0.0 (tagged as v1.0.0)")
    return tuple(int(part) for part in match.groups())  # type: ignore[return-value]


def version_tags(api: HfApi, repo_id: str, repo_type: str = "dataset") -> dict[tuple[int, int, int], tuple[str, str]]:
    """The repository's version tags: ``(major, minor, patch) -> (tag, commit)``; ``{}`` when the
    repository does not exist yet."""
    try:
        refs = api.list_repo_refs(repo_id, repo_type=repo_type)
    except RepositoryNotFoundError:
        return {}
    versions = {}
    for tag in refs.tags:
        if match := _TAG.match(tag.name):
            versions[tuple(int(p) for p in match.groups())] = (tag.name, tag.target_commit)
    return versions


def next_version(api: HfApi, repo_id: str) -> str:
    """The version ``generate --push-to-hub`` uses when none is given: ``1.0.0`` for a new
    repository, else the latest version with its minor number bumped."""
    with hub_errors(f"listing the versions of {repo_id}"):
        versions = version_tags(api, repo_id)
    if not versions:
        return "1.0.0"
    major, minor, _ = max(versions)
    return f"{major}.{minor + 1}.0"


def card_at(api: HfApi, repo_id: str, revision: str) -> tuple[dict[str, Any], list[dict]]:
    """The ``symgen`` block and configs of the card at ``revision``."""
    path = hf_hub_download(repo_id, "README.md", repo_type="dataset", revision=revision, token=api.token)
    return read_card(Path(path).read_text(encoding="utf-8"), f"{repo_id}@{revision}:README.md")


def describe_changes(parent: dict[str, Any], meta: dict[str, Any]) -> list[str]:
    """Human-readable differences between a parent version's ``symgen`` block and this one."""
    changes = []
    for section in ("generator", "settings", "demonstrations", "prompt_templates"):
        before, after = parent.get(section) or {}, meta.get(section) or {}
        for key in sorted(set(before) | set(after)):
            if before.get(key) != after.get(key):
                changes.append(f"{section}.{key}: {before.get(key)!r} -> {after.get(key)!r}")
    if parent.get("task") != meta.get("task"):
        changes.append(f"task: {parent.get('task')!r} -> {meta.get('task')!r}")
    kept_before = (parent.get("counts") or {}).get("questions_kept")
    kept_after = (meta.get("counts") or {}).get("questions_kept")
    changes.append(f"kept rows: {kept_before} -> {kept_after}")
    return changes


def _dataset_of(meta: dict[str, Any]) -> dict[str, Any]:
    """The card's ``dataset`` entry for an older card without one, from the task registry."""
    from ..pipeline.columns import Columns
    from ..publish import dataset_block
    from ..tasks import get_task

    task = get_task(str(meta.get("task")))
    word = "executable" if "candidates_executable" in (meta.get("counts") or {}) else "valid"
    return dataset_block(task, Columns(task, word))


@dataclass
class PushResult:
    """What :func:`push` published: the repository, the tag, the commit and its URL."""

    repo_id: str
    tag: str
    commit: str
    commit_url: str
    parent_tag: str | None


def push(
    folder: str | Path,
    repo_id: str,
    version: str,
    *,
    private: bool = False,
    revision: str | None = None,
    commit_message: str | None = None,
) -> PushResult:
    """Upload a dataset folder in one commit and tag it ``v<version>``.

    The card is re-rendered for the Hub: the loading example names ``repo_id`` and the tag, and
    the ``symgen`` block records the version, its parent (the highest existing version below it)
    and what changed since. Data files of the previous version that this folder no longer has
    are deleted in the same commit.

    Args:
        folder: a folder written by ``symgen generate``.
        repo_id: ``namespace/name`` of the dataset repository (created if needed).
        version: ``X.Y.Z``.
        private: create the repository private (an existing one keeps its visibility).
        revision: the branch to commit to (created from ``main`` if needed; default ``main``).
        commit_message: default ``symgen: v<version>``.

    Returns:
        A :class:`PushResult`.

    Raises:
        InputError: a bad version, a folder that is not a symgen dataset, or a tag that exists
            already (tags are never moved: pick a new version).
        HubError: the Hub refused or could not be reached.
    """
    folder = Path(folder)
    numbers = parse_version(version)
    tag = f"v{version}"
    meta, configs = read_folder_card(folder)
    api = HfApi()
    branch = revision or "main"
    with hub_errors(f"pushing {folder} to {repo_id}"):
        head = branch_head(api, repo_id, branch)  # read before the versions: the commit is pinned on it
        versions = version_tags(api, repo_id)
        if numbers in versions:
            existing_tag, commit = versions[numbers]
            raise InputError(
                f"{repo_id}: tag {existing_tag} exists already (commit {commit[:12]}); published versions "
                "are never moved, so that pinned users keep their data: push with a new --version"
            )
        older = [v for v in versions if v < numbers]
        parent_tag = versions[max(older)][0] if older else None
        meta = dict(meta, version=version, parent_version=parent_tag, changes=[])
        if "dataset" not in meta:  # a folder written before cards carried the task's own description
            meta["dataset"] = _dataset_of(meta)
        if parent_tag:
            parent_meta, _ = card_at(api, repo_id, parent_tag)
            meta["changes"] = describe_changes(parent_meta, meta)
        card = render_card(meta, configs, repo_id, revision=tag)

        api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
        if branch != "main" and head is None:
            api.create_branch(repo_id, repo_type="dataset", branch=branch, exist_ok=True)
        if head is None:  # a new repository or branch: pinned on its first commit
            head = branch_head(api, repo_id, branch)
        local = sorted(
            p.relative_to(folder).as_posix()
            for p in folder.rglob("*")
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
        )
        operations: list = [
            CommitOperationAdd(path_in_repo=path, path_or_fileobj=str(folder / path)) for path in local if path != "README.md"
        ]
        operations.append(CommitOperationAdd(path_in_repo="README.md", path_or_fileobj=card.encode("utf-8")))
        owned = {config_dir(c["config_name"]) + "/" for c in configs}
        remote = api.list_repo_files(repo_id, repo_type="dataset", revision=head or branch)
        operations += [
            CommitOperationDelete(path_in_repo=path)
            for path in remote
            if path not in local and path.startswith(tuple(owned))
        ]
        info = api.create_commit(
            repo_id,
            repo_type="dataset",
            operations=operations,
            commit_message=commit_message or f"symgen: {tag}",
            revision=branch,
            parent_commit=head,
        )
        try:
            api.create_tag(repo_id, repo_type="dataset", tag=tag, revision=info.oid, tag_message=f"symgen {tag}")
        except HfHubHTTPError as error:
            if getattr(error.response, "status_code", None) == 409:
                raise InputError(
                    f"{repo_id}: tag {tag} was created by someone else during this push; commit "
                    f"{info.oid[:12]} is on {branch} untagged: push again with a new --version"
                ) from None
            raise
    return PushResult(repo_id, tag, info.oid, info.commit_url, parent_tag)


@dataclass
class VersionInfo:
    """One published version, summarised from its card."""

    version: str
    tag: str
    commit: str
    parent: str | None
    task: str
    generator: str
    questions: int | None
    kept: int | None
    #: the run's token bill from its card (``requests``, ``prompt_tokens``, ``completion_tokens``...), if recorded
    bill: dict | None = None


def list_versions(repo_id: str) -> list[VersionInfo]:
    """The repository's versions, oldest first, each with the summary from its card.

    Raises:
        HubError: the repository cannot be read.
    """
    api = HfApi()
    infos = []
    with hub_errors(f"listing the versions of {repo_id}"):
        api.dataset_info(repo_id)  # a clear error for a missing repository
        for numbers, (tag, commit) in sorted(version_tags(api, repo_id).items()):
            try:
                meta, _ = card_at(api, repo_id, tag)
            except (InputError, EntryNotFoundError, RevisionNotFoundError):
                infos.append(VersionInfo(".".join(map(str, numbers)), tag, commit, None, "?", "(no symgen card)", None, None))
                continue
            counts = meta.get("counts") or {}
            generator = meta.get("generator") or {}
            infos.append(
                VersionInfo(
                    version=".".join(map(str, numbers)),
                    tag=tag,
                    commit=commit,
                    parent=meta.get("parent_version"),
                    task=meta.get("task", "?"),
                    # card_at (read_card) redacted the spec: a card written by an older version may hold credentials
                    generator=" ".join(filter(None, [str(generator.get("spec") or ""),
                                                     f"({generator['model']})" if generator.get("model") else ""])),
                    questions=counts.get("questions"),
                    kept=counts.get("questions_kept"),
                    bill=meta.get("bill") if isinstance(meta.get("bill"), dict) else None,
                )
            )
    return infos
