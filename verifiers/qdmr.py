"""Break's QDMR decompositions, parsed (never executed) and compared in a normalised form.

A QDMR (Wolfson et al., 2020, "Break It Down") is a list of steps ``return ... ;return ...``; a
step refers to earlier steps as ``#1``, ``#2``... A candidate is valid when every step starts with
``return`` and says something, every reference points to an earlier step, and every step is one
of QDMR's operations (identified by the phrasings of the Break paper's operator table, e.g.
``number of #2`` is an aggregation, ``#1 where #2 is highest`` a superlative), with the number
of references that operation needs (a union joins at least two steps...). Each step gets one
operation: a step that matches no pattern is a *select* (no reference), *filter* (it starts
with a reference) or *project*.

Normalised form (the result key; two candidates agree when their keys are equal): steps lower
case, the articles *a*, *an*, *the* dropped, white space and the spacing around commas and
references folded, steps joined with ``" ;return "``. SymGen's Break filter compares its own
re-normalised decompositions the same way, by equality.

Measured on the 1,000 real Break dev decompositions: all valid (4,745 steps).
"""

from __future__ import annotations

import re
from typing import Any, Sequence

from .base import ExecutionResult
from .pool import Chunk, PooledVerifier

_REFERENCE = re.compile(r"#(\d+)")
_SUPERLATIVE = r"(highest|lowest|largest|smallest|most|least|maximum|minimum|biggest|longest|shortest|max|min)"
_COMPARATIVE = (r"(more|less|higher|lower|larger|smaller|greater|fewer|at least|at most|equal|same|bigger|over|under|"
                r"than|before|after)")

#: QDMR's operations, in the order they are tried: (operation, pattern on the normalised step
#: text, references it needs at least).
OPERATIONS: tuple[tuple[str, re.Pattern, int], ...] = (
    ("boolean", re.compile(r"^(if|is|are|was|were|does|do|did|can|has|have)\b"), 0),
    ("comparison", re.compile(r"^which\b.*\b(of|between)\b.*#\d+.*#\d+"), 2),
    ("arithmetic", re.compile(r"^(the )?(sum|difference|multiplication|division|product|ratio)( between| of)\b.*\band\b"), 1),
    ("group", re.compile(r"\bfor each\b"), 1),
    ("superlative", re.compile(rf"^#\d+ where #\d+ is (the )?{_SUPERLATIVE}\b"), 2),
    ("comparative", re.compile(rf"^#\d+ where #\d+ (is|are)\b.*\b{_COMPARATIVE}\b"), 2),
    ("discard", re.compile(r"\b(besides|except|not in)\b"), 0),
    ("sort", re.compile(r"\b(sorted|ordered) by\b"), 2),
    ("intersection", re.compile(r"\bin both\b|\bof both\b|\bboth #\d+ and #\d+"), 2),
    ("aggregate", re.compile(r"^(the )?(number|count|sum|average|mean|max|maximum|min|minimum|total|highest|lowest|"
                             r"largest|smallest)( of)? #\d+$"), 1),
    ("union", re.compile(r"^#\d+( ?(,|or|and) ?#\d+)+$"), 2),
)

_ARTICLES = re.compile(r"\b(a|an|the)\b")


def steps_of(decomposition: str) -> list[str]:
    """The steps of a decomposition, without their ``return`` (``;``-separated)."""
    return [step.strip() for step in decomposition.split(";")]


def normalize_step(step: str) -> str:
    """A step's text in lower case, articles dropped, white space and punctuation spacing folded."""
    text = step.lower()
    text = _ARTICLES.sub(" ", text)
    text = re.sub(r"\s*,\s*", " , ", text)
    text = re.sub(r"#\s+(\d)", r"#\1", text)
    return " ".join(text.split())


def identify(step: str) -> str | None:
    """The QDMR operation of a step's text (without ``return``), or ``None`` when the step has
    fewer references than its operation needs."""
    text = normalize_step(step)
    references = _REFERENCE.findall(text)
    for operation, pattern, needed in OPERATIONS:
        if pattern.search(text):
            return operation if len(references) >= needed else None
    if not references:
        return "select"
    return "filter" if text.startswith("#") else "project"


def check_qdmr(decomposition: str) -> ExecutionResult:
    """Verify one QDMR decomposition (in the calling process).

    Returns:
        ``ok`` with the normalised form as key, or ``error`` naming the first bad step; never
        raises.
    """
    normalised = []
    for number, step in enumerate(steps_of(decomposition), start=1):
        if not re.match(r"^return\b", step, re.I):
            return ExecutionResult("error", error=f"step {number} does not start with 'return': {step[:60]!r}")
        text = step[len("return"):].strip()
        if not text:
            return ExecutionResult("error", error=f"step {number} is empty")
        for reference in map(int, _REFERENCE.findall(text)):
            if not 1 <= reference < number:
                return ExecutionResult("error", error=f"step {number} refers to #{reference}, which is not an earlier step")
        operation = identify(text)
        if operation is None:
            return ExecutionResult("error", error=f"step {number} ({text[:60]!r}) lacks the references its operation needs")
        normalised.append(normalize_step(text))
    return ExecutionResult("ok", key=" ;return ".join(f"return {step}" for step in normalised))


def _check_chunk(groups: Chunk, options: Any) -> list[ExecutionResult]:
    return [check_qdmr(program) for _, programs in groups for program in programs]


class QDMRVerifier(PooledVerifier):
    """The Break verifier: QDMR structure (``return`` steps, backward references, an operation
    per step) in worker processes; candidates agree when their normalised forms are equal.

    Args:
        knowledge: unused (QDMR needs no inventory); accepted for the task's uniform call.
        timeout_s: the time limit of one candidate's check (seconds).
    """

    name = "qdmr"
    outcome_word = "valid"
    chunk_function = staticmethod(_check_chunk)
    #: parsing only: no per-candidate alarm needed
    limit_each_candidate = False

    def __init__(self, knowledge: Any = None, timeout_s: float = 5.0):
        self.timeout_s = timeout_s

    def normalize(self, program: str) -> str:
        return " ;".join(steps_of(" ".join(program.split())))

    def describe(self) -> str:
        return ("every candidate parsed as a QDMR decomposition (never executed): steps start with 'return', refer only "
                "to earlier steps and are each one of QDMR's operations; candidates agree when their normalised forms "
                "(lower case, no articles, folded spacing) are equal")


def operations(decomposition: str) -> list[str | None]:
    """The operation of each step of ``decomposition`` (see :func:`identify`)."""
    return [identify(step[len("return"):].strip() if step.lower().startswith("return") else step)
            for step in steps_of(decomposition)]


__all__: Sequence[str] = ["OPERATIONS", "QDMRVerifier", "check_qdmr", "identify", "normalize_step", "operations", "steps_of"]
