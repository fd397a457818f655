"""GeoQuery in Prolog: US-geography questions to the Prolog meaning representation (field names
``nl``, ``prolog``), SymGen's last language.

Knowledge: geobase (public GeoQuery facts about states, cities, rivers, lakes, mountains,
borders and high/low points, ``data/geoquery/geobase.pl``), the meaning representation's
predicates defined over it by this project (``geoquery.pl``) and the engine's server loop
(``server.pl``). Candidates are executed by SWI-Prolog (:mod:`~symgen_datasets.verifiers.prolog`),
one engine per worker process; agreement is equal answers (denotations).

Answer parsing is SymGen's: the completion continues ``answer(``; parentheses are balanced, and
the text is cut at ``:-`` and ``%``.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from ..errors import InputError
from ..metrics import Evaluation, share
from ..verifiers.prolog import DEFAULT_EMPTY_RESULTS, EMPTY_RESULT_POLICIES, PrologFiles, PrologVerifier
from .base import SamplingDefaults, Task, TaskKnowledge, TaskOption, check_aligned, fenced_code


class GeoQueryKnowledge(TaskKnowledge):
    """geobase and the meaning representation's predicates, as the files an engine consults.

    Args:
        folder: where ``geobase.pl``, ``geoquery.pl`` and ``server.pl`` are.
        geobase: another geobase file (``--geobase``), if given.
        empty_results: how empty answers vote (``--empty-results``).

    Raises:
        InputError: a file is missing.
    """

    def __init__(self, folder: Path, geobase: str | Path | None = None, empty_results: str | None = None):
        self.files = PrologFiles(geobase=str(Path(geobase or folder / "geobase.pl").resolve()),
                                 library=str((folder / "geoquery.pl").resolve()),
                                 server=str((folder / "server.pl").resolve()))
        for path in (self.files.geobase, self.files.library, self.files.server):
            if not Path(path).is_file():
                raise InputError(f"{path}: missing; the geoquery task needs geobase and its predicates")
        self.empty_results = empty_results or DEFAULT_EMPTY_RESULTS

    def fingerprint(self, digest: "hashlib._Hash") -> None:
        for path in (self.files.geobase, self.files.library):
            digest.update(Path(path).read_bytes())


def _policy(value: str) -> str:
    if value not in EMPTY_RESULT_POLICIES:
        raise InputError(f"--empty-results {value!r}: expected one of {', '.join(EMPTY_RESULT_POLICIES)}")
    return value


def complete_query(text: str) -> str:
    """SymGen's repair of a completion: ``answer(`` in front when the model continued the prompt,
    cut at ``:-`` and ``%``, missing closing parentheses added."""
    text = " ".join(text.strip().split())
    if not text.startswith("answer("):
        text = "answer(" + text
    text = text.split(":-")[0].split("%")[0].strip()
    missing = text.count("(") - text.count(")")
    return text + ")" * missing if missing > 0 else text


@dataclass(frozen=True)
class GeoQueryTask(Task):
    """GeoQuery (Zelle & Mooney, 1996) with its Prolog meaning representation. A task model reads
    ``nl`` and writes ``prolog``; evaluation executes both on geobase."""

    sampling: SamplingDefaults = SamplingDefaults(question_max_new_tokens=48, answer_max_new_tokens=160,
                                                  question_stop=("\n",), answer_stop=("\n",))

    family: ClassVar[str] = "geoquery"
    question_field: ClassVar[str] = "nl"
    answer_field: ClassVar[str] = "prolog"
    field_descriptions: ClassVar[dict[str, str]] = {
        "nl": "a question about US geography",
        "prolog": "its GeoQuery Prolog query, answer(Var, Goal), executed over geobase",
    }
    tags: ClassVar[tuple[str, ...]] = ("semantic-parsing", "geoquery", "prolog")
    task_categories: ClassVar[tuple[str, ...]] = ("text-generation", "question-answering")
    question_template: ClassVar[str] = "geoquery_question.j2"
    answer_template: ClassVar[str] = "geoquery_answer.j2"
    extrapolation_template: ClassVar[str] = "geoquery_extrapolate.j2"
    program_pattern: ClassVar[re.Pattern] = re.compile(r"\banswer\s*\(|\b(?:stateid|cityid|riverid|placeid)\s*\(")
    options: ClassVar[tuple[TaskOption, ...]] = (
        TaskOption("geobase", "a geobase file of Prolog facts; default: the packaged one", metavar="FILE"),
        TaskOption("empty_results", "how empty answers vote: abstain (SymGen's rule: they vote for nothing), reject "
                   "(a question whose largest cluster is empty is not kept) or agree", default=DEFAULT_EMPTY_RESULTS,
                   type=_policy, metavar="POLICY"),
    )
    verifier_class: ClassVar[type] = PrologVerifier
    primary_metric: ClassVar[str] = "execution_accuracy"

    def load_knowledge(self, options: dict[str, Any], snapshot_dir: str | Path | None = None) -> GeoQueryKnowledge:
        return GeoQueryKnowledge(self.packaged, options.get("geobase"), _policy(options.get("empty_results")
                                                                               or DEFAULT_EMPTY_RESULTS))

    def make_verifier(self, knowledge: GeoQueryKnowledge, timeout_s: float = 5.0) -> PrologVerifier:
        """The Prolog verifier over ``knowledge``, with the task's ``--empty-results`` policy.

        Raises:
            InputError: SWI-Prolog is not installed (the message says how to install it).
        """
        return PrologVerifier(knowledge, timeout_s=timeout_s)

    def parse_answer(self, text: str, row: dict | None = None) -> str | None:
        """The query in a completion (a code fence's content if there is one, its first line):
        :func:`complete_query`; ``None`` when empty."""
        text = fenced_code(text).strip()
        text = re.sub(r"^\s*prolog\s*:\s*", "", text.splitlines()[0] if text else "", flags=re.I).strip()
        if not text:
            return None
        return complete_query(text)

    def evaluate(self, references, predictions, knowledge: GeoQueryKnowledge, timeout_s: float = 10.0) -> Evaluation:
        """SymGen's GeoQuery metric: a prediction is right when it executes and its answer equals
        the gold query's (as ``check_denotaion_same`` of SymGen's ``prolog_eval.py``); also exact
        match (after folding white space) and the share that executes (``valid``).

        Returns:
            ``execution_accuracy`` (primary), ``exact_match``, ``valid``; per row ``correct``,
            ``valid``, ``exact`` and, when the prediction fails, ``error``.
        """
        check_aligned(references, predictions)
        golds = [r[self.answer_field] for r in references]
        with PrologVerifier(knowledge, timeout_s=timeout_s) as verifier:
            batches = list(verifier.execute_stream((None, [p or "", g]) for p, g in zip(predictions, golds)))
        per_row = []
        for prediction, gold, (mine, theirs) in zip(predictions, golds, batches):
            exact = bool(prediction) and " ".join(prediction.split()) == " ".join(gold.split())
            correct = mine.ok and theirs.ok and mine.key == theirs.key
            row = {"correct": correct, "valid": mine.ok, "exact": exact}
            if not mine.ok:
                row["error"] = mine.error or mine.status
            per_row.append(row)
        metrics = {"execution_accuracy": share([r["correct"] for r in per_row]),
                   "exact_match": share([r["exact"] for r in per_row]), "valid": share([r["valid"] for r in per_row])}
        return Evaluation(metrics, "execution_accuracy", per_row)

    def card_summary(self) -> str:
        return ("Synthetic GeoQuery data: questions about US geography (`nl`) with Prolog queries (`prolog`). Every "
                "candidate query was executed by SWI-Prolog over geobase (only the meaning representation's "
                "predicates can run); a question was kept only when enough candidates had the same non-empty answer.")


GEOQUERY = GeoQueryTask(
    name="geoquery",
    pretty_name="GeoQuery Prolog (synthetic, SymGen)",
    description="US-geography questions to Prolog queries (executed by SWI-Prolog over geobase)",
    license="gpl-2.0",
    source_datasets=("HKUNLP/SymGen geoquery", "GeoQuery (Zelle & Mooney, 1996)"),
    data_dir="geoquery",
    instruction="Translate the question into a GeoQuery Prolog query, answer(Var, Goal), over geobase.",
)
