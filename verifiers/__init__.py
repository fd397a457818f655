"""Executors for generated programs and the agreement-based verifier (majority vote).

Installed as ``symgen_datasets.verifiers``.
"""

from .agreement import VoteResult, distinct_programs, majority_vote, normalize_sql
from .sqlite import ExecutionResult, SQLiteExecutor, connect_readonly, is_ordered, result_keys

__all__ = [
    "ExecutionResult",
    "SQLiteExecutor",
    "VoteResult",
    "connect_readonly",
    "distinct_programs",
    "is_ordered",
    "majority_vote",
    "normalize_sql",
    "result_keys",
]
