"""GeoQuery's Prolog queries, executed by SWI-Prolog over geobase; candidates agree when their
answers (denotations) are equal.

Each worker process runs one ``swipl`` engine (:class:`PrologEngine`), started once by the pool's
per-worker setup with the task's knowledge consulted: geobase's facts, the meaning
representation's predicates (``geoquery.pl``) and the server loop (``server.pl``). A candidate is
sent as one line; the engine reads it as a term (it is never consulted), refuses it unless every
goal in it is a predicate of the meaning representation (so ``shell/1``, ``open/3``,
``assert/1``, ``consult/1``, ``halt/0`` never run), and answers with its denotation: the sorted
set of the answer variable's printed names, computed under a time limit
(``call_with_time_limit``) and a stack limit. A reply that does not come within the limit plus
two seconds gets the engine killed and started again; the candidate is a ``timeout``.

Agreement (as in SymGen's GeoQuery verifier): equal denotations. An empty answer says nothing
about the question: by default (``empty_results="abstain"``, SymGen's rule) it executes but votes
for nothing; ``reject`` and ``agree`` as for SQL.
"""

from __future__ import annotations

import os
import resource
import select
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from ..errors import InputError
from .base import ExecutionResult, fold_whitespace
from .pool import Chunk, PooledVerifier

#: How to get SWI-Prolog, for the message shown when ``swipl`` is missing.
INSTALL_HELP = ("SWI-Prolog is needed to execute GeoQuery queries: apt-get install swi-prolog-nox (Debian, "
                "Ubuntu), brew install swi-prolog (macOS), or https://www.swi-prolog.org/download/stable")
EMPTY_ANSWER = "[]"
EMPTY_RESULT_POLICIES = ("abstain", "reject", "agree")
DEFAULT_EMPTY_RESULTS = "abstain"
#: The engine's Prolog stack limit, and the address space of its process (bytes).
STACK_LIMIT = "256m"
ENGINE_MEMORY_BYTES = 2 * 1024**3


def swipl() -> str | None:
    """The ``swipl`` executable, or ``None`` when SWI-Prolog is not installed."""
    return shutil.which("swipl")


@dataclass(frozen=True)
class PrologFiles:
    """The files an engine consults: geobase's facts, the meaning representation's predicates,
    and the server loop."""

    geobase: str
    library: str
    server: str


class PrologEngine:
    """One SWI-Prolog process that answers GeoQuery queries, one at a time.

    Args:
        files: what it consults.
        timeout_s: the time limit of one query (seconds), enforced inside Prolog; the process is
            killed and started again when no reply comes within ``timeout_s + 2``.

    Raises:
        InputError: SWI-Prolog is not installed (the message says how to install it), or the
            engine does not start.
    """

    def __init__(self, files: PrologFiles, timeout_s: float = 5.0):
        self.files = files
        self.timeout_s = timeout_s
        self._process: subprocess.Popen | None = None
        self._buffer = b""

    def _start(self) -> None:
        executable = swipl()
        if executable is None:
            raise InputError(INSTALL_HELP)

        def limit() -> None:
            resource.setrlimit(resource.RLIMIT_AS, (ENGINE_MEMORY_BYTES, ENGINE_MEMORY_BYTES))

        self._process = subprocess.Popen(
            [executable, f"--stack-limit={STACK_LIMIT}", "--no-packs", "-q", self.files.server, "--", self.files.geobase,
             self.files.library, f"{self.timeout_s:g}"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env={"LANG": "C.UTF-8"},
            preexec_fn=limit, start_new_session=True)
        self._buffer = b""
        if self._readline(time.monotonic() + 60) != "ready":
            self.close()
            raise InputError("SWI-Prolog started but the GeoQuery engine did not load "
                             f"({self.files.server}, {self.files.library}, {self.files.geobase})")

    def _readline(self, deadline: float) -> str | None:
        assert self._process is not None and self._process.stdout is not None
        fd = self._process.stdout.fileno()
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                return None
            chunk = os.read(fd, 65536)
            if not chunk:
                return None
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line.decode("utf-8", "replace")

    def query(self, text: str) -> ExecutionResult:
        """The denotation of one query; never raises for a bad query.

        Returns:
            ``ok`` with the denotation (Prolog's ``~q`` text of the sorted list) as key and
            detail, ``error`` (syntax, a goal outside the representation, an undefined
            predicate, a resource error...), or ``timeout``.
        """
        if self._process is None or self._process.poll() is not None:
            self._start()
        line = " ".join(text.split())
        try:
            self._process.stdin.write(line.encode("utf-8") + b"\n")
            self._process.stdin.flush()
        except (BrokenPipeError, OSError):
            self.close()
            return ExecutionResult("crash", error="the Prolog engine ended")
        reply = self._readline(time.monotonic() + self.timeout_s + 2.0)
        if reply is None:
            self.close()  # stuck past its own limit, or gone: a fresh engine serves the next query
            return ExecutionResult("timeout", error=f"over the {self.timeout_s:g} s time limit")
        kind, _, rest = reply.partition("\t")
        if kind == "ok":
            return ExecutionResult("ok", key=rest, detail=rest)
        if kind == "timeout":
            return ExecutionResult("timeout", error=f"over the {self.timeout_s:g} s time limit")
        return ExecutionResult("error", error=rest[:300] or "error")

    def close(self) -> None:
        """Stop the process."""
        if self._process is not None:
            try:
                os.killpg(self._process.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            self._process.wait()
            for stream in (self._process.stdin, self._process.stdout):
                try:
                    stream.close()
                except (OSError, AttributeError):
                    pass
            self._process = None


_ENGINE: PrologEngine | None = None


def start_engine(files: PrologFiles, timeout_s: float) -> None:
    """Per-worker setup: this worker's engine, started once and consulted once."""
    global _ENGINE
    if _ENGINE is None:
        _ENGINE = PrologEngine(files, timeout_s)
        _ENGINE._start()


def _check_chunk(groups: Chunk, options: tuple[PrologFiles, float]) -> list[ExecutionResult]:
    files, timeout_s = options
    if _ENGINE is None:
        start_engine(files, timeout_s)
    return [_ENGINE.query(program) for _, programs in groups for program in programs]


class PrologVerifier(PooledVerifier):
    """The GeoQuery verifier: candidates executed by SWI-Prolog in worker processes (one engine
    per worker); candidates agree when their denotations are equal.

    Args:
        knowledge: the task's knowledge, with ``files`` (:class:`PrologFiles`) and
            ``empty_results``.
        timeout_s: the time limit of one query (seconds).

    Raises:
        InputError: SWI-Prolog is not installed (the message says how to install it).
    """

    name = "prolog"
    outcome_word = "executable"
    chunk_function = staticmethod(_check_chunk)
    #: the engine enforces the limit itself (call_with_time_limit, then a kill)
    limit_each_candidate = False

    def __init__(self, knowledge: Any, timeout_s: float = 5.0):
        if swipl() is None:
            raise InputError(INSTALL_HELP)
        self.files: PrologFiles = knowledge.files
        self.timeout_s = timeout_s
        self.empty_results = getattr(knowledge, "empty_results", None) or DEFAULT_EMPTY_RESULTS
        if self.empty_results not in EMPTY_RESULT_POLICIES:
            raise ValueError(f"empty_results {self.empty_results!r}: expected one of {', '.join(EMPTY_RESULT_POLICIES)}")

    def worker_options(self) -> tuple[PrologFiles, float]:
        return (self.files, self.timeout_s)

    def worker_setup(self):
        return start_engine, (self.files, self.timeout_s)

    normalize = staticmethod(fold_whitespace)

    @property
    def barred_labels(self) -> frozenset[str]:
        """With ``empty_results="reject"``, the empty answer: voted for, never the winner."""
        return frozenset({EMPTY_ANSWER}) if self.empty_results == "reject" else frozenset()

    def cluster_labels(self, outcomes: Sequence[ExecutionResult], index: Sequence[int]) -> list[str | None] | None:
        """Equal denotations agree; with ``abstain`` (the default) an empty answer votes for nothing."""
        if self.empty_results != "abstain":
            return None
        return [o.key if o.ok and o.key != EMPTY_ANSWER else None for o in outcomes]

    def provenance(self) -> dict[str, str]:
        version = subprocess.run([swipl() or "swipl", "--version"], capture_output=True, text=True).stdout.strip()
        return {"engine": version or "SWI-Prolog", "empty_results": self.empty_results}

    def describe(self) -> str:
        empty = {"abstain": "an empty answer votes for nothing", "reject": "a question whose largest cluster has an "
                 "empty answer is not kept", "agree": "empty answers agree with each other"}[self.empty_results]
        return (f"every candidate executed by SWI-Prolog over geobase (only the meaning representation's predicates; "
                f"{self.timeout_s:g} s per query, in worker processes); candidates agree when their answers (the "
                f"sorted set of the answer variable's names) are equal; {empty}")


__all__ = ["PrologEngine", "PrologFiles", "PrologVerifier", "INSTALL_HELP", "swipl"]
