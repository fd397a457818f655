"""Publish task model folders to the Hub as immutable versions, with their model cards.

As for datasets (:mod:`.push`): one commit, then a tag ``vX.Y.Z``; an existing tag is never
moved. The folder's ``checkpoints/`` (optimizer states for ``--resume-from-checkpoint``) and
hidden files stay local; files of the previous version that the folder no longer has are deleted
in the same commit, so the repository holds exactly one model.
"""

from __future__ import annotations

from pathlib import Path

from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi
from huggingface_hub.errors import HfHubHTTPError

from ..errors import InputError
from ..publish.model_card import CURVE_FILE, render_model_card
from .push import PushResult, branch_head, hub_errors, parse_version, version_tags

#: Folders of a training output that are not the model.
LOCAL_ONLY = ("checkpoints",)


def model_files(folder: Path) -> list[str]:
    """The files of a task model folder that are published (relative POSIX paths, sorted)."""
    return sorted(
        p.relative_to(folder).as_posix() for p in folder.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
        and p.relative_to(folder).parts[0] not in LOCAL_ONLY
    )


def merged_copy(folder: Path, target: Path) -> Path:
    """A LoRA task model folder with its adapters merged into the base model's weights, written
    to ``target``: whole weights, the tokenizer, the other published files, and the record with
    ``adapter`` off, the merged weight files' digests (for ``symgen reproduce``) and
    ``merged_from`` (the adapters' own digests and settings).

    Raises:
        InputError: ``folder`` holds no adapters, or its base model cannot be loaded.
    """
    import shutil

    from ..training.finetune import weight_file_digests
    from ..training.task_model import CONFIG_FILE, TaskModelConfig, load_adapter

    config = TaskModelConfig.load(folder)
    if not config.adapter:
        raise InputError(f"--merge: {folder} holds whole weights, not LoRA adapters; push it without --merge")
    model, tokenizer = load_adapter(folder, config, what=str(folder))
    target.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(target, safe_serialization=True)
    tokenizer.save_pretrained(target)
    for path in model_files(folder):
        if not path.startswith(("adapter_", "tokenizer", "special_tokens", "chat_template")) and path != CONFIG_FILE \
                and not (target / path).exists():
            (target / path).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(folder / path, target / path)
    training = dict(config.training)
    training["merged_from"] = {"adapter": training.pop("adapter", None),
                               "adapter_weights_sha256": training.get("weights_sha256")}
    training["weights_sha256"] = weight_file_digests(target)
    TaskModelConfig(**{**config.__dict__, "adapter": False, "training": training}).save(target)
    return target


def push_model(folder: str | Path, repo_id: str, version: str, *, private: bool = False, revision: str | None = None,
               commit_message: str | None = None, merge: bool = False) -> PushResult:
    """Upload a task model folder in one commit and tag it ``v<version>``; the card is
    re-rendered with ``repo_id`` and the tag.

    Args:
        folder: a folder written by ``symgen train``.
        repo_id: ``namespace/name`` of the model repository (created if needed).
        version: ``X.Y.Z``.
        private: create the repository private.
        revision: the branch to commit to (default ``main``).
        commit_message: default ``symgen: v<version>``.
        merge: for LoRA adapters, push the base model with the adapters merged in (whole
            weights, :func:`merged_copy`) instead of the adapters.

    Raises:
        InputError: a bad version, a folder that is not a task model, or an existing tag.
        HubError: the Hub refused or could not be reached.
    """
    if merge:
        import tempfile

        parse_version(version)  # a bad version fails before the merge
        with tempfile.TemporaryDirectory(prefix="symgen-merged-") as scratch:
            merged = merged_copy(Path(folder), Path(scratch) / "model")
            return push_model(merged, repo_id, version, private=private, revision=revision, commit_message=commit_message)
    from ..training.task_model import CONFIG_FILE, TaskModelConfig

    folder = Path(folder)
    numbers = parse_version(version)
    tag = f"v{version}"
    config = TaskModelConfig.load(folder)
    card = render_model_card(config, repo_id, revision=tag, version=version, has_curve=(folder / CURVE_FILE).is_file())
    api = HfApi()
    branch = revision or "main"
    with hub_errors(f"pushing {folder} to {repo_id}"):
        head = branch_head(api, repo_id, branch, repo_type="model")  # the commit is pinned on it
        versions = version_tags(api, repo_id, repo_type="model")
        if numbers in versions:
            existing, commit = versions[numbers]
            raise InputError(f"{repo_id}: tag {existing} exists already (commit {commit[:12]}); published versions are "
                             "never moved: push with a new --version")
        older = [v for v in versions if v < numbers]
        parent_tag = versions[max(older)][0] if older else None
        api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
        if branch != "main" and head is None:
            api.create_branch(repo_id, repo_type="model", branch=branch, exist_ok=True)
        if head is None:
            head = branch_head(api, repo_id, branch, repo_type="model")
        local = model_files(folder)
        # the record as read (credentials redacted), never the file's bytes: an older one may hold some
        operations: list = [CommitOperationAdd(path_in_repo=path, path_or_fileobj=str(folder / path))
                            for path in local if path not in ("README.md", CONFIG_FILE)]
        operations.append(CommitOperationAdd(path_in_repo=CONFIG_FILE, path_or_fileobj=config.to_json().encode("utf-8")))
        operations.append(CommitOperationAdd(path_in_repo="README.md", path_or_fileobj=card.encode("utf-8")))
        remote = api.list_repo_files(repo_id, repo_type="model", revision=head or branch)
        operations += [CommitOperationDelete(path_in_repo=path) for path in remote
                       if path not in local and path != "README.md" and path != ".gitattributes"]
        info = api.create_commit(repo_id, repo_type="model", operations=operations,
                                 commit_message=commit_message or f"symgen: {tag}", revision=branch,
                                 parent_commit=head)
        try:
            api.create_tag(repo_id, repo_type="model", tag=tag, revision=info.oid, tag_message=f"symgen {tag}")
        except HfHubHTTPError as error:
            if getattr(error.response, "status_code", None) == 409:
                raise InputError(f"{repo_id}: tag {tag} was created by someone else during this push; commit "
                                 f"{info.oid[:12]} is on {branch} untagged: push again with a new --version") from None
            raise
    return PushResult(repo_id, tag, info.oid, info.commit_url, parent_tag)
