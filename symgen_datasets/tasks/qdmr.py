"""Break: questions to QDMR decompositions (field names ``question_text``, ``decomposition``).

No knowledge beyond the demonstrations; candidates are parsed and compared in a normalised form
(:class:`~symgen_datasets.verifiers.qdmr.QDMRVerifier`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import ClassVar

from ..verifiers.qdmr import QDMRVerifier
from ..metrics.text import qdmr_scores
from .base import SamplingDefaults, Task, check_aligned, fenced_code


@dataclass(frozen=True)
class BreakTask(Task):
    """Break (Wolfson et al., 2020): a question and its QDMR decomposition. A task model reads
    ``question_text`` and writes ``decomposition``; evaluation: normalised exact match."""

    sampling: SamplingDefaults = SamplingDefaults(question_max_new_tokens=64, answer_max_new_tokens=160,
                                                  question_stop=("\n",), answer_stop=("\n",))

    family: ClassVar[str] = "qdmr"
    question_field: ClassVar[str] = "question_text"
    answer_field: ClassVar[str] = "decomposition"
    field_descriptions: ClassVar[dict[str, str]] = {
        "question_text": "a question",
        "decomposition": "its QDMR decomposition: steps 'return ...' separated by ';', #n referring to step n",
    }
    tags: ClassVar[tuple[str, ...]] = ("question-decomposition", "qdmr", "break")
    program_pattern: ClassVar[re.Pattern] = re.compile(r"^\s*return\b|;\s*return\b|#\d", re.I)
    task_categories: ClassVar[tuple[str, ...]] = ("text-generation", "question-answering")
    question_template: ClassVar[str] = "qdmr_question.j2"
    answer_template: ClassVar[str] = "qdmr_answer.j2"
    verifier_class: ClassVar[type] = QDMRVerifier

    def parse_answer(self, text: str, row: dict | None = None) -> str | None:
        """The decomposition in a completion: a code fence's content if there is one, else the
        first line that holds a ``return`` step; ``None`` when there is none."""
        text = fenced_code(text)
        for line in text.splitlines():
            line = re.sub(r"^\s*decomposition\s*:\s*", "", line, flags=re.I).strip()
            if re.match(r"^return\b", line, re.I):
                return " ".join(line.split())
        return None

    def evaluate(self, references, predictions, knowledge, timeout_s: float = 10.0):
        """Normalised exact match of decompositions; see
        :func:`symgen_datasets.metrics.text.qdmr_scores`."""
        check_aligned(references, predictions)
        return qdmr_scores([p or "" for p in predictions], [r[self.answer_field] for r in references])

    def card_summary(self) -> str:
        return ("Synthetic Break data: questions (`question_text`) with QDMR decompositions (`decomposition`). Every "
                "candidate was parsed (steps, references, operations) and a question was kept only when enough "
                "candidates had the same normalised decomposition.")


BREAK = BreakTask(
    name="break",
    pretty_name="Break QDMR (synthetic, SymGen)",
    description="questions to QDMR decompositions (parsed, compared in a normalised form)",
    license="mit",
    source_datasets=("HKUNLP/SymGen break", "Break (Wolfson et al., 2020)"),
    data_dir="break",
    instruction="Decompose the question into a sequence of steps: each step starts with 'return', steps are "
                "separated by ';', and #n refers to the result of step n.",
)
