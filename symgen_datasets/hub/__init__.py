"""Versioned datasets on the Hub: push (one commit + a tag), versions, and re-verification."""

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
    "reverify",
]
