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
_MARKER = "__SYMGEN_RESULTS__"

_CALLS_HARNESS = """

import json as __symgen_json, signal as __symgen_signal
def __symgen_alarm(*_):
    raise TimeoutError("call over its time limit")
__symgen_signal.signal(__symgen_signal.SIGALRM, __symgen_alarm)
__symgen_results = []
for __symgen_call in {calls!r}:
    __symgen_signal.setitimer(__symgen_signal.ITIMER_REAL, {per_call})
    try:
        __symgen_results.append(["value", repr(eval(__symgen_call))])
    except BaseException as __symgen_error:
        __symgen_results.append(["raise", type(__symgen_error).__name__])
    finally:
        __symgen_signal.setitimer(__symgen_signal.ITIMER_REAL, 0)
print("\\n{marker}" + __symgen_json.dumps(__symgen_results))
"""

_TEST_HARNESS = """

{test}

check({entry_point})
print("\\n{marker}passed")
"""


def program_source(context: dict, candidate: str) -> str:
    """The program that runs ``candidate`` (a function body completing ``context["prompt"]``)
    on the context's test: its own ``test`` if it has one, else its ``calls``."""
    source = context["prompt"] + candidate.rstrip() + "\n"
    if context.get("test"):
        return source + _TEST_HARNESS.format(test=context["test"], entry_point=context["entry_point"], marker=_MARKER)
    return source + _CALLS_HARNESS.format(calls=list(context.get("calls") or []), per_call=CALL_TIMEOUT_S, marker=_MARKER)


def check_python(candidate: str, context: dict, sandbox: Sandbox) -> ExecutionResult:
    """Run one candidate in ``sandbox`` (from the calling process); never raises.

    Returns:
        With the problem's own test: ``ok`` (key ``"passed"``) or ``error``. With calls: ``ok``
        with the digest of the output vector as key and the vector (JSON) as detail, ``error``
        when nothing ran or every call raised, ``timeout`` past the limit.
    """
    if not context.get("test") and not context.get("calls"):
        return ExecutionResult("error", error="no test inputs to run the candidate on")
    result = sandbox.run(program_source(context, candidate))
    if result.status == "timeout":
        return ExecutionResult("timeout", error=f"over the {sandbox.timeout_s:g} s time limit")
    lines = [line for line in result.stdout.splitlines() if line.startswith(_MARKER)]
    if result.status != "ok" or not lines:
        last = result.stderr.strip().splitlines()[-1] if result.stderr.strip() else f"exit status {result.returncode}"
        return ExecutionResult("error", error=last[:300])
    payload = lines[-1][len(_MARKER):]
    if context.get("test"):
        return ExecutionResult("ok", key="passed") if payload == "passed" else ExecutionResult("error", error="test not passed")
    try:
        outputs = json.loads(payload)
    except ValueError:
        return ExecutionResult("error", error="unreadable outputs")
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
            ``process``) picks the sandbox's isolation (see :class:`Sandbox`).
        timeout_s: the time limit of one candidate's run, all its inputs together (seconds).
        memory_bytes: the address space of one run.

    Raises:
        RuntimeError: bubblewrap is required and does not work on this machine.
    """

    name = "python"
    outcome_word = "executable"
    chunk_function = staticmethod(_check_chunk)

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
