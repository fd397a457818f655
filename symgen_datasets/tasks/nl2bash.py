"""NL2Bash: natural-language descriptions to Bash command lines (field names ``nl``, ``bash``).

Knowledge: the inventory of known utilities (``utilities.json``, from the training data). The
prompts follow SymGen's (``Natural Language: ... / Bash: ...``). Candidates are parsed, never
executed (:class:`~symgen_datasets.verifiers.bash.BashVerifier`).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from ..errors import InputError
from ..verifiers.bash import BashVerifier
from ..metrics.text import bash_scores
from .base import SamplingDefaults, Task, TaskKnowledge, TaskOption, check_aligned, fenced_code


class UtilityInventory(TaskKnowledge):
    """The utilities a Bash candidate may start with.

    Args:
        path: a JSON list of names.

    Raises:
        InputError: the file is missing or not a JSON list of strings.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        try:
            names = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise InputError(f"{self.path}: cannot read the utility inventory ({error})") from None
        if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
            raise InputError(f"{self.path}: expected a JSON list of utility names")
        self.utilities = frozenset(names)

    def fingerprint(self, digest) -> None:
        digest.update("\n".join(sorted(self.utilities)).encode())


@dataclass(frozen=True)
class NL2BashTask(Task):
    """Natural language to Bash (NL2Bash, Lin et al., 2018). A task model reads ``nl`` and
    writes ``bash``."""

    sampling: SamplingDefaults = SamplingDefaults(question_max_new_tokens=64, answer_max_new_tokens=96,
                                                  question_stop=("\n",), answer_stop=("\n",))

    family: ClassVar[str] = "nl2bash"
    question_field: ClassVar[str] = "nl"
    answer_field: ClassVar[str] = "bash"
    field_descriptions: ClassVar[dict[str, str]] = {
        "nl": "natural-language description of what to do",
        "bash": "the Bash command line",
    }
    tags: ClassVar[tuple[str, ...]] = ("nl2bash", "bash", "code")
    question_template: ClassVar[str] = "nl2bash_question.j2"
    answer_template: ClassVar[str] = "nl2bash_answer.j2"
    options: ClassVar[tuple[TaskOption, ...]] = (
        TaskOption("utilities", "JSON list of the utilities a command may start with; default: the packaged "
                   "inventory (from NL2Bash's training data)", metavar="FILE"),
    )
    verifier_class: ClassVar[type] = BashVerifier
    primary_metric: ClassVar[str] = "char_bleu"

    def load_knowledge(self, options: dict[str, Any], snapshot_dir: str | Path | None = None) -> UtilityInventory:
        return UtilityInventory(options.get("utilities") or self.packaged / "utilities.json")

    def parse_answer(self, text: str, row: dict | None = None) -> str | None:
        """The command line in a completion: a code fence's content if there is one, else the
        first non-empty line, without a ``Bash:`` or ``$`` prompt; ``None`` when empty."""
        text = fenced_code(text)
        for line in text.splitlines():
            line = re.sub(r"^\s*(?:bash( commands?)?\s*:\s*|\$\s+)", "", line, flags=re.I).strip()
            if line:
                return line
        return None

    def evaluate(self, references, predictions, knowledge, timeout_s: float = 10.0):
        """Character-level corpus BLEU (SymGen's metric) and exact match; see
        :func:`symgen_datasets.metrics.text.bash_scores`."""
        check_aligned(references, predictions)
        return bash_scores([p or "" for p in predictions], [r[self.answer_field] for r in references])

    def card_summary(self) -> str:
        return ("Synthetic NL2Bash data: natural-language descriptions (`nl`) with Bash command lines (`bash`). "
                "Every candidate command was parsed with bashlex (never executed) and checked against the utilities "
                "of NL2Bash's training data; a description was kept only when enough candidates agreed (BLEU "
                "similarity of their token sequences).")


NL2BASH = NL2BashTask(
    name="nl2bash",
    pretty_name="NL2Bash (synthetic, SymGen)",
    description="natural-language descriptions to Bash command lines (parsed, never executed)",
    license="gpl-3.0",
    source_datasets=("HKUNLP/SymGen nl2bash", "NL2Bash (Lin et al., 2018)"),
    data_dir="nl2bash",
    instruction="Translate the natural language description to one Bash command line.",
)
