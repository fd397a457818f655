"""Hub-style dataset folders, dataset cards, versioned pushes and re-verification."""

from .card import read_card, read_folder_card, render_card
from .folder import write_dataset_folder
from .push import HubError, PushResult, VersionInfo, list_versions, next_version, push
from .verify import VerifyReport, reverify

__all__ = [
    "HubError",
    "PushResult",
    "VerifyReport",
    "VersionInfo",
    "list_versions",
    "next_version",
    "push",
    "read_card",
    "read_folder_card",
    "render_card",
    "reverify",
    "write_dataset_folder",
]
