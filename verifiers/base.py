"""The verifier interface: a candidate program in, an outcome out.

Every symbolic language checks its candidates the same way (SymGen, Ye et al., EMNLP 2023, §2.3):
each distinct candidate becomes an **outcome** in a worker process, either an error or a result
**key** that can be compared, and the one shared agreement vote
(:func:`~symgen_datasets.verifiers.agreement.majority_vote`) clusters the candidates by it.
Executing verifiers (SQL on a database, Python on test inputs) and parse-only verifiers (Bash,
TOP, QDMR) differ only in what their worker function does.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Sequence

#: Outcome statuses: ``ok`` plus the ways a candidate fails.
STATUSES = ("ok", "error", "timeout", "crash", "unparsed")


@dataclass(frozen=True)
class ExecutionResult:
    """The outcome of verifying one candidate program.

    Attributes:
        status: ``"ok"``, ``"error"`` (rejected: does not run, parse or pass the checks),
            ``"timeout"`` (over the time limit), ``"crash"`` (the worker process died or hung) or
            ``"unparsed"`` (nothing was extracted from the completion).
        key: the comparable result (an execution-result digest, a canonical form...); ``None``
            unless ``ok``. Candidates with equal keys agree.
        num_rows: rows returned, for SQL (capped at ``max_rows + 1``); 0 otherwise.
        error: why the candidate failed, when it did.
        detail: what a task may keep besides the key (e.g. a program's outputs, as JSON).
    """

    status: str
    key: str | None = None
    num_rows: int = 0
    error: str | None = None
    detail: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def digest(text: str) -> str:
    """SHA-256 hex digest of ``text`` (UTF-8), for result keys that would be long."""
    return hashlib.sha256(text.encode("utf-8", errors="replace")).hexdigest()


def fold_whitespace(program: str) -> str:
    """The default normal form for deduplication: white space runs folded, ends stripped."""
    return " ".join(program.split())


class Verifier(ABC):
    """Turns candidate programs into outcomes, in worker processes.

    Subclasses set :attr:`name` and :attr:`outcome_word`, and implement :meth:`execute_stream`
    (usually through a :class:`~symgen_datasets.verifiers.pool.WorkerPool`) and :meth:`describe`.
    A verifier is a context manager; :meth:`close` stops its workers.

    Attributes:
        name: short name shown by ``symgen tasks`` and in cards (``sqlite``, ``bash``...).
        outcome_word: what a candidate that passes is called in counts and columns
            (``candidates_<word>``, ``num_<word>``): ``executable`` for verifiers that run the
            program, ``valid`` for those that parse and check it.
    """

    name: str = ""
    outcome_word: str = "valid"

    def normalize(self, program: str) -> str:
        """The form under which duplicate candidates are executed once (deduplication is an
        execution cache, never a vote filter). Default: :func:`fold_whitespace`."""
        return fold_whitespace(program)

    def context(self, row: dict) -> Any:
        """What the workers need to verify the candidates of question ``row`` besides the
        programs (a database path, test inputs, the question text...); picklable."""
        return None

    @abstractmethod
    def execute_stream(self, jobs: Iterable[tuple[Any, Sequence[str]]]) -> Iterator[list[ExecutionResult]]:
        """Verify batches of programs as a stream: ``(context, programs)`` jobs read lazily,
        one list of outcomes per job, in job order, aligned with its programs."""

    def cluster_labels(self, outcomes: Sequence[ExecutionResult], index: Sequence[int]) -> list[str | None] | None:
        """The agreement: one cluster label per outcome of a distinct program (``None`` for a
        failed one); candidates with the same label agree. ``index`` maps each sampled
        candidate to its distinct program (so a verifier can weigh programs by how often they
        were sampled). Default: ``None``, meaning equal result keys agree (the vote reads the
        keys itself)."""
        return None

    #: How the winning cluster's program is chosen (see
    #: :func:`~symgen_datasets.verifiers.agreement.majority_vote`'s ``representative``):
    #: ``"logprob"`` where members agree exactly, ``"support"`` for fuzzy agreement.
    representative: str = "logprob"

    #: Whether a distinct program's cluster label depends on its outcome alone (equal results
    #: agree), so that more candidates can only add votes to clusters: what adaptive voting's
    #: early stop needs to be exact (:mod:`symgen_datasets.pipeline.voting`). ``False`` for a
    #: fuzzy clustering whose clusters form from all the candidates together.
    stable_labels: bool = True

    #: Cluster labels that take part in the vote but never win (see
    #: :func:`~symgen_datasets.verifiers.agreement.majority_vote`'s ``barred``); none by default.
    barred_labels: frozenset[str] = frozenset()

    def configure(self, recorded: dict[str, Any]) -> None:
        """Adopt the agreement rule recorded in a dataset card (its ``verifier`` block: the
        :meth:`provenance` of the verifier that made it), so that ``symgen verify`` re-derives a
        dataset made under an older rule. The base class has one rule: nothing to adopt."""

    @abstractmethod
    def describe(self) -> str:
        """One sentence for dataset cards and ``symgen tasks``: what is checked and when two
        candidates agree."""

    def provenance(self) -> dict[str, str]:
        """Facts about this verifier's environment worth recording in a card (e.g. the sandbox
        that ran generated code); empty by default."""
        return {}

    def execute(self, context: Any, programs: Sequence[str]) -> list[ExecutionResult]:
        """Verify one batch of programs; :meth:`execute_stream` for a single job."""
        return next(iter(self.execute_stream([(context, programs)])))

    def close(self) -> None:
        """Stop the worker processes (if any)."""

    def __enter__(self) -> "Verifier":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
