"""MTOP: task-oriented requests to TOP logical forms (field names ``question``, ``logical_form``).

Knowledge: the label inventory (``labels.json``: intents and slots of the training data), part
of the informative prompt as in SymGen (labels grouped by their first word) and of the
verification (:class:`~symgen_datasets.verifiers.top.TOPVerifier`).
"""

from __future__ import annotations

import json
import re
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from ..errors import InputError
from ..verifiers.top import TOPVerifier, parse_top
from ..metrics.text import mtop_scores
from .base import SamplingDefaults, Task, TaskKnowledge, TaskOption, check_aligned, fenced_code


class LabelInventory(TaskKnowledge):
    """The intents and slots a TOP form may use, and which slots each intent takes.

    Args:
        path: a JSON object ``{"intents": [...], "slots": [...], "slots_of": {intent: [...]}}``
            (``slots_of`` optional: without it, any slot may go under any intent).

    Raises:
        InputError: the file is missing or malformed.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            self.intents = frozenset(data["intents"])
            self.slots = frozenset(data["slots"])
            self.slots_of = {intent: frozenset(held) for intent, held in data["slots_of"].items()} if "slots_of" in data else None
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise InputError(f"{self.path}: cannot read the label inventory ({error}); expected "
                             '{"intents": [...], "slots": [...]}') from None

    def summary(self) -> str:
        """The inventory as the prompt shows it: labels grouped by kind and first word
        (``IN:GET: ALARM, WEATHER | IN:CREATE: ...``), one line for intents, one for slots."""
        lines = []
        for labels in (self.intents, self.slots):
            groups: OrderedDict[str, list[str]] = OrderedDict()
            for label in sorted(labels):
                head, _, rest = label.partition("_")
                groups.setdefault(head, []).append(rest)
            lines.append(" | ".join(f"{head}: {', '.join(filter(None, rests))}" if any(rests) else head
                                    for head, rests in groups.items()))
        return "\n".join(lines)

    def fingerprint(self, digest) -> None:
        digest.update(self.path.read_bytes())


@dataclass(frozen=True)
class MTOPTask(Task):
    """MTOP (Li et al., 2021), English: a request and its TOP logical form. A task model reads
    ``question`` and writes ``logical_form``; evaluation: exact match and template accuracy."""

    prompt_token_budget: int = 2048  # the label inventory alone is about 1,000 tokens
    sampling: SamplingDefaults = SamplingDefaults(question_max_new_tokens=48, answer_max_new_tokens=128,
                                                  question_stop=("\n",), answer_stop=("\n",))

    family: ClassVar[str] = "mtop"
    question_field: ClassVar[str] = "question"
    answer_field: ClassVar[str] = "logical_form"
    field_descriptions: ClassVar[dict[str, str]] = {
        "question": "a request to an assistant",
        "logical_form": "its TOP logical form: [IN:INTENT words [SL:SLOT words ] ... ]",
    }
    tags: ClassVar[tuple[str, ...]] = ("semantic-parsing", "mtop", "top")
    program_pattern: ClassVar[re.Pattern] = re.compile(r"\[\s*(?:IN|SL):")
    question_template: ClassVar[str] = "mtop_question.j2"
    answer_template: ClassVar[str] = "mtop_answer.j2"
    options: ClassVar[tuple[TaskOption, ...]] = (
        TaskOption("labels", 'JSON {"intents": [...], "slots": [...]} of the allowed labels; default: the packaged '
                   "inventory (MTOP's training data)", metavar="FILE"),
    )
    verifier_class: ClassVar[type] = TOPVerifier

    def load_knowledge(self, options: dict[str, Any], snapshot_dir: str | Path | None = None) -> LabelInventory:
        return LabelInventory(options.get("labels") or self.packaged / "labels.json")

    def prompt_context(self, knowledge: LabelInventory, row: dict[str, Any] | None = None) -> dict[str, Any]:
        """The label inventory, part of the informative prompt as in SymGen."""
        return {"labels": knowledge.summary()}

    def parse_answer(self, text: str, row: dict | None = None) -> str | None:
        """The first bracketed form in a completion (a code fence's content if there is one),
        from its first ``[`` to the bracket that closes it; ``None`` when there is none."""
        text = fenced_code(text)
        start = text.find("[")
        if start < 0:
            return None
        depth = 0
        for end in range(start, len(text)):
            depth += {"[": 1, "]": -1}.get(text[end], 0)
            if depth == 0:
                return " ".join(text[start:end + 1].split())
        return " ".join(text[start:].split()) or None  # unclosed: the verifier says so

    def make_verifier(self, knowledge: LabelInventory, timeout_s: float = 5.0) -> TOPVerifier:
        return TOPVerifier(knowledge, timeout_s=timeout_s, question_field=self.question_field)

    def evaluate(self, references, predictions, knowledge, timeout_s: float = 10.0):
        """Exact match and template accuracy (SymGen's MTOP evaluator); see
        :func:`symgen_datasets.metrics.text.mtop_scores`."""
        check_aligned(references, predictions)
        return mtop_scores([p or "" for p in predictions], [r[self.answer_field] for r in references])

    def card_summary(self) -> str:
        return ("Synthetic MTOP data: requests (`question`) with TOP logical forms (`logical_form`). Every candidate "
                "form was parsed as a TOP tree and checked against MTOP's label inventory (slot text must come from "
                "the request); a request was kept only when enough candidates had the same canonical form.")


def frame(logical_form: str) -> str | None:
    """The form without its words (MTOP's template), or ``None`` when it does not parse."""
    try:
        return parse_top(logical_form).frame()
    except ValueError:
        return None


MTOP = MTOPTask(
    name="mtop",
    pretty_name="MTOP (synthetic, SymGen)",
    description="task-oriented requests to TOP logical forms (parsed against the label inventory)",
    license="cc-by-sa-4.0",
    source_datasets=("HKUNLP/SymGen mtop", "MTOP (Li et al., 2021)"),
    data_dir="mtop",
    instruction="Translate the natural language description to a logical form with the labels above.",
)
