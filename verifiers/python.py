"""Python functions, executed in a sandbox on test inputs; candidates agree when their outputs do.

Dual agreement after CodeT (Chen et al., 2022, "CodeT: Code Generation with Generated Tests"):
the LLM writes test *inputs* for a problem (calls of its function, kept only when every argument
is a literal) besides the candidate functions; every candidate runs on every input in the
:mod:`~symgen_datasets.verifiers.sandbox`, and candidates are clustered by their vector of
outputs (``repr`` of each return value, or the exception type it raised). A candidate is valid
when it returns a value other than ``None`` for at least one input (a candidate that returns
nothing but ``None``, such as ``pass``, or raises everywhere, says nothing about the problem and
must not look agreed); the largest cluster wins, as in SymGen's vote.
Candidates never see expected outputs, so a cluster is a set of programs that behave alike, and
the kept row's ``test`` states the winners' behaviour (the agreed outputs).

A row that carries the problem's own tests (HumanEval's ``test`` with a ``check(candidate)``
function, as for ``symgen check`` on gold solutions) is verified by those tests instead.
"""

from __future__ import annotations

import json
from typing import Any, Sequence

from .base import ExecutionResult, digest
from .pool import Chunk, PooledVerifier
from .sandbox import Sandbox

#: Wall-clock limit of one call of a candidate on one input (seconds).
CALL_TIMEOUT_S = 1.0


def program_source(context: dict, candidate: str) -> str:
    """The candidate's module: ``context["prompt"]`` completed by ``candidate`` (a function body)."""
    return context["prompt"] + candidate.rstrip() + "\n"


def check_python(candidate: str, context: dict, sandbox: Sandbox) -> ExecutionResult:
    """Run one candidate in ``sandbox`` (from the calling process); never raises.

    The candidate's module runs in a process of its own; the sandbox's judge calls it on the
    context's ``calls`` (or runs the problem's own ``test`` against it) and writes the verdict
    itself, so a candidate cannot forge one (see :meth:`Sandbox.run_function`).

    Returns:
        With the problem's own test: ``ok`` (key ``"passed"``) or ``error``. With calls: ``ok``
        with the digest of the output vector as key and the vector (JSON) as detail, ``error``
        when nothing ran or every call raised, ``timeout`` past the limit.
    """
    if not context.get("test") and not context.get("calls"):
        return ExecutionResult("error", error="no test inputs to run the candidate on")
    source = program_source(context, candidate)
    if context.get("test"):
        result = sandbox.run_function(source, test=context["test"], prompt=context["prompt"],
                                      entry_point=context["entry_point"], per_call_s=sandbox.timeout_s)
    else:
        result = sandbox.run_function(source, calls=list(context["calls"]), per_call_s=CALL_TIMEOUT_S)
    verdict = result.verdict
    if verdict is None and result.status == "timeout":
        return ExecutionResult("timeout", error=f"over the {sandbox.timeout_s:g} s time limit")
    if verdict is None:
        last = result.stderr.strip().splitlines()[-1] if result.stderr.strip() else f"exit status {result.returncode}"
        return ExecutionResult("error", error=last[:300])
    if context.get("test"):
        if verdict.get("passed") is True:
            return ExecutionResult("ok", key="passed")
        return ExecutionResult("error", error=str(verdict.get("error") or "test not passed")[:300])
    if "outputs" not in verdict:
        return ExecutionResult("error", error=str(verdict.get("error") or "nothing ran")[:300])
    outputs = verdict["outputs"]
    if not any(kind == "value" and text != "None" for kind, text in outputs):
        # nothing but None or exceptions says nothing about the problem: candidates that all do
        # so (e.g. `pass`) must not look agreed (as empty SQL results, or SymGen's Prolog filter)
        raised = sorted({name for kind, name in outputs if kind == "raise"})
        return ExecutionResult("error", error="returned None or raised on every input"
                               + (f" ({', '.join(raised)})" if raised else ""))
    detail = json.dumps(outputs)
    return ExecutionResult("ok", key=digest(detail), detail=detail)


_SANDBOXES: dict[tuple, Sandbox] = {}


def _check_chunk(groups: Chunk, options: tuple[float, int, str]) -> list[ExecutionResult]:
    sandbox = _SANDBOXES.get(options)
    if sandbox is None:
        sandbox = _SANDBOXES[options] = Sandbox(*options)
    return [check_python(program, context, sandbox) for context, programs in groups for program in programs]


class PythonVerifier(PooledVerifier):
    """The Python verifier: candidates run in the sandbox on the question's test inputs (or its
    own test), in worker processes; candidates agree when their outputs are equal.

    Args:
        knowledge: the task's knowledge; its ``sandbox`` attribute (``auto``, ``bubblewrap``,
            ``namespaces``, ``none-i-accept-the-risk``) picks the sandbox's isolation (see :class:`Sandbox`).
        timeout_s: the time limit of one candidate's run, all its inputs together (seconds).
        memory_bytes: the address space of one run.

    Raises:
        SandboxUnavailable: the isolation asked for (``auto``: any) does not work on this machine.
    """

    name = "python"
    outcome_word = "executable"
    chunk_function = staticmethod(_check_chunk)
    #: the sandbox limits each run itself (wall clock and CPU time)
    limit_each_candidate = False

    def __init__(self, knowledge: Any = None, timeout_s: float = 5.0, memory_bytes: int = 512 * 1024**2):
        self.isolation = getattr(knowledge, "sandbox", "auto") or "auto"
        self.timeout_s = timeout_s
        self.memory_bytes = memory_bytes
        self.sandbox = Sandbox(timeout_s, memory_bytes, self.isolation)  # fails now if bubblewrap is required

    def worker_options(self) -> tuple[float, int, str]:
        return (self.timeout_s, self.memory_bytes, self.isolation)

    def normalize(self, program: str) -> str:
        """Trailing white space and blank lines dropped (indentation is meaning in Python)."""
        return "\n".join(line.rstrip() for line in program.strip("\n").splitlines() if line.strip())

    def context(self, row: dict) -> dict:
        return {"prompt": row["prompt"], "entry_point": row["entry_point"], "calls": list(row.get("test_inputs") or []),
                "test": row.get("test")}

    def describe(self) -> str:
        return ("every candidate function executed in a sandbox on test inputs the LLM wrote (and the problem's "
                "docstring examples); candidates agree when they return the same outputs on every input (dual "
                "agreement, CodeT)")

    def provenance(self) -> dict[str, str]:
        return {"sandbox": self.sandbox.describe()}


def outputs_of(detail: str | None) -> list[tuple[str, str]]:
    """The ``(kind, text)`` output vector stored in a winning outcome's detail (empty if none)."""
    return [tuple(item) for item in json.loads(detail)] if detail else []


__all__: Sequence[str] = ["CALL_TIMEOUT_S", "PythonVerifier", "check_python", "outputs_of", "program_source"]
