"""Verifiers: candidate programs in, outcomes out, in worker processes; and the one agreement vote.

* :mod:`.base`: the :class:`Verifier` interface and the :class:`ExecutionResult` outcome;
* :mod:`.pool`: the worker pool every verifier runs in;
* :mod:`.agreement`: deduplication and the execution-based majority vote, shared by all;
* one module per language: :mod:`.sqlite` (SQL, executed), :mod:`.bash` (Bash, parsed),
  :mod:`.top` (MTOP's TOP trees, parsed), :mod:`.qdmr` (Break's QDMR, parsed), :mod:`.python`
  (Python, executed in a sandbox on generated test inputs).

Installed as ``symgen_datasets.verifiers``.
"""

from .agreement import VoteResult, distinct_programs, majority_vote
from .base import ExecutionResult, Verifier
from .pool import WorkerPool
from .sqlite import (
    EMPTY_RESULT_KEY,
    SQLiteExecutor,
    SQLiteVerifier,
    connect_readonly,
    is_ordered,
    normalize_sql,
    result_keys,
)

__all__ = [
    "EMPTY_RESULT_KEY",
    "ExecutionResult",
    "SQLiteExecutor",
    "SQLiteVerifier",
    "Verifier",
    "VoteResult",
    "WorkerPool",
    "connect_readonly",
    "distinct_programs",
    "is_ordered",
    "majority_vote",
    "normalize_sql",
    "result_keys",
]
