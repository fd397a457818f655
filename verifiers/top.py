"""MTOP's TOP trees, parsed (never executed): a bracketed logical form becomes a tree whose labels
are checked against the task's label inventory and whose slot text must come from the question.

TOP (Gupta et al., 2018) writes a frame as ``[IN:INTENT words [SL:SLOT words ] ... ]``: an intent
node holds words and slot nodes, a slot node words and nested intents. A candidate is valid when
it parses into one tree whose root is an intent, every label is in the inventory (intents as
intents, slots as slots), every slot is one its intent takes (the inventory's ``slots_of``: the
pairs seen in the training data, when the inventory has them), and the words of every slot occur
in the question (compared ignoring case and white space: MTOP's forms are tokenised, "7 pm" for
"7pm"). Measured on MTOP's dev set: 2,223 of the 2,235 gold forms pass (the others use an
(intent, slot) pair the training data never has), and a label replaced by another label of the
same kind is rejected 84% of the time (0.1% with label membership alone). Its result key is the
canonical serialisation (single spaces, ``[IN:X w [SL:Y w ] ]``); two candidates agree when their
keys are equal, as SymGen's MTOP filter does with its TOP utilities' re-serialisation.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Iterator

from .base import ExecutionResult
from .pool import Chunk, PooledVerifier


@dataclass(frozen=True)
class Node:
    """A TOP node: its label (``IN:...`` or ``SL:...``) and children (words and nodes)."""

    label: str
    children: tuple["Node | str", ...]

    @property
    def is_intent(self) -> bool:
        return self.label.startswith("IN:")

    def words(self) -> list[str]:
        """The words directly under this node."""
        return [child for child in self.children if isinstance(child, str)]

    def nodes(self) -> Iterator["Node"]:
        """This node and every node below it, depth first."""
        yield self
        for child in self.children:
            if isinstance(child, Node):
                yield from child.nodes()

    def serialize(self) -> str:
        """The canonical TOP string: ``[LABEL child child ... ]`` with single spaces."""
        inner = " ".join(child if isinstance(child, str) else child.serialize() for child in self.children)
        return f"[{self.label} {inner} ]" if inner else f"[{self.label} ]"

    def frame(self) -> str:
        """The tree without its words (intents and slots only): what MTOP's template accuracy
        compares."""
        inner = " ".join(child.frame() for child in self.children if isinstance(child, Node))
        return f"[{self.label} {inner} ]" if inner else f"[{self.label} ]"


class TOPSyntaxError(ValueError):
    """A logical form that is not one well-formed TOP tree."""


_LABEL = re.compile(r"^(IN|SL):[A-Z][A-Z0-9_]*$")


def parse_top(text: str) -> Node:
    """Parse a TOP bracketed form into a :class:`Node`.

    Raises:
        TOPSyntaxError: unbalanced brackets, a bad label, words outside the root, an empty form.
    """
    tokens = text.replace("[", " [ ").replace("]", " ] ").split()
    if not tokens:
        raise TOPSyntaxError("empty logical form")
    position = 0

    def node() -> Node:
        nonlocal position
        if tokens[position] != "[":
            raise TOPSyntaxError(f"expected '[' at token {position + 1}, got {tokens[position]!r}")
        position += 1
        if position >= len(tokens) or not _LABEL.match(tokens[position]):
            found = tokens[position] if position < len(tokens) else "the end"
            raise TOPSyntaxError(f"expected a label IN:... or SL:... at token {position + 1}, got {found!r}")
        label = tokens[position]
        position += 1
        children: list[Node | str] = []
        while position < len(tokens) and tokens[position] != "]":
            if tokens[position] == "[":
                children.append(node())
            else:
                children.append(tokens[position])
                position += 1
        if position >= len(tokens):
            raise TOPSyntaxError(f"unclosed [{label}")
        position += 1
        return Node(label, tuple(children))

    tree = node()
    if position != len(tokens):
        raise TOPSyntaxError(f"text after the root node: {' '.join(tokens[position:position + 5])!r}")
    return tree


def _squash(text: str) -> str:
    return re.sub(r"\s+", "", text.lower())


def check_top(logical_form: str, question: str, intents: frozenset[str], slots: frozenset[str],
              slots_of: dict[str, frozenset[str]] | None = None) -> ExecutionResult:
    """Verify one TOP logical form for ``question`` (in the calling process).

    Args:
        slots_of: the slots each intent may hold; no check of the pairs when ``None``.

    Returns:
        ``ok`` with the canonical serialisation as key, or ``error`` saying what is wrong;
        never raises.
    """
    try:
        tree = parse_top(logical_form)
    except TOPSyntaxError as error:
        return ExecutionResult("error", error=f"not a TOP tree: {error}")
    if not tree.is_intent:
        return ExecutionResult("error", error=f"the root is {tree.label}, not an intent")
    asked = _squash(question)
    for node in tree.nodes():
        if node.is_intent and node.label not in intents:
            return ExecutionResult("error", error=f"unknown intent {node.label}")
        if node.is_intent and slots_of is not None:
            for child in node.children:
                if isinstance(child, Node) and child.label not in slots_of.get(node.label, ()):
                    return ExecutionResult("error", error=f"{node.label} never takes {child.label}")
        if not node.is_intent:
            if node.label not in slots:
                return ExecutionResult("error", error=f"unknown slot {node.label}")
            text = _squash("".join(node.words()))
            if text and text not in asked:
                return ExecutionResult("error", error=f"the text of {node.label} ({' '.join(node.words())!r}) is not in the question")
    return ExecutionResult("ok", key=tree.serialize())


def _check_chunk(groups: Chunk, labels: tuple) -> list[ExecutionResult]:
    intents, slots, slots_of = labels
    return [check_top(program, question, intents, slots, slots_of) for question, programs in groups for program in programs]


class TOPVerifier(PooledVerifier):
    """The MTOP verifier: TOP parse, labels in the inventory, slot text from the question, in
    worker processes; candidates agree when their canonical serialisations are equal.

    Args:
        labels: the label inventory (an object with ``intents`` and ``slots`` sets and, optionally,
            ``slots_of``, the slots each intent may hold: e.g. the task's knowledge).
        timeout_s: the time limit of one candidate's check (seconds).
        question_field: the row field holding the question (the context of its candidates).
    """

    name = "top"
    outcome_word = "valid"
    chunk_function = staticmethod(_check_chunk)
    #: parsing only: no per-candidate alarm needed
    limit_each_candidate = False

    def __init__(self, labels: Any, timeout_s: float = 5.0, question_field: str = "question"):
        slots_of = getattr(labels, "slots_of", None)
        self.labels = (frozenset(labels.intents), frozenset(labels.slots),
                       {intent: frozenset(held) for intent, held in slots_of.items()} if slots_of is not None else None)
        self.timeout_s = timeout_s
        self.question_field = question_field

    def context(self, row: dict) -> str:
        return row[self.question_field]

    def worker_options(self) -> Any:
        return self.labels

    def describe(self) -> str:
        pairs = ", each slot under an intent that takes it" if self.labels[2] is not None else ""
        return (f"every candidate parsed as a TOP tree (never executed): labels among {len(self.labels[0])} intents and "
                f"{len(self.labels[1])} slots{pairs}, slot text taken from the question; candidates agree when their "
                "canonical serialisations are equal")
