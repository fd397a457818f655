"""``symgen calibrate``: how far can a generator's verified data be trusted, for every ``V``?

SymGen keeps a question when its largest cluster of agreeing candidates has at least ``V`` of the
``K`` sampled candidates; the right ``V`` depends on the LLM. Calibration answers *labelled*
questions (the task's real dev rows, with gold programs) through the very pipeline of ``symgen
generate`` (``--questions``, ``--min-votes 1``), scores every question's winning program against
its gold with the task's own metric (:meth:`Task.evaluate <symgen_datasets.tasks.base.Task.evaluate>`,
e.g. SQL execution accuracy), and reports for each ``V`` from 1 to ``K``:

* **yield**: the share of questions kept (winner with ``>= V`` votes);
* **precision**: the share of kept rows whose program is correct;
* **correct kept**: correct kept rows over all questions (yield x precision).

Beside them, the first sampled candidate of every question, unverified (what a pipeline without
the verifier would keep). The winner does not depend on ``V``, so one run gives the whole table.
The responses are cached in the work folder: a second calibration with other verifier options
(e.g. text-to-SQL's ``--empty-results``) costs no request.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from .. import __version__
from ..errors import InputError
from .run import generate
from .settings import GenerateSettings


@dataclass
class CalibrationPoint:
    """One row of the table: ``min_votes`` (V), ``kept`` questions, ``correct`` kept rows,
    ``yield_`` = kept / questions, ``precision`` = correct / kept (``None`` when nothing is kept)
    and ``correct_share`` = correct / questions."""

    min_votes: int
    kept: int
    correct: int
    yield_: float
    precision: float | None
    correct_share: float


@dataclass
class Calibration:
    """The result of :func:`calibrate`.

    Attributes:
        task: the task's name.
        generator: the generator's provenance (backend and model).
        num_questions: labelled questions answered.
        num_samples: K.
        points: one :class:`CalibrationPoint` per V in 1..K.
        first_candidate_accuracy: share of questions whose first sampled candidate is correct.
        any_winner_accuracy: precision at V = 1 (every question with a winner).
        verifier: the verifier's recorded rule (e.g. SQL's ``empty_results``).
        settings: the generation settings used (K, temperature, seed...).
        questions: per question: its fields, gold, ``candidates``, ``candidate_status``, the
            ``winner`` and its ``votes``, and whether winner and first candidate are correct
            (written to ``questions.jsonl``).
    """

    task: str
    generator: str
    num_questions: int
    num_samples: int
    points: list[CalibrationPoint]
    first_candidate_accuracy: float
    verifier: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    references_file: str = ""
    questions: list[dict[str, Any]] = field(default_factory=list)
    output: Path | None = None

    def point(self, min_votes: int) -> CalibrationPoint:
        """The row for ``V = min_votes``.

        Raises:
            KeyError: ``min_votes`` outside 1..K.
        """
        for point in self.points:
            if point.min_votes == min_votes:
                return point
        raise KeyError(min_votes)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-able record (``calibration.json``)."""
        record = asdict(self)
        record.pop("output")
        record.pop("questions")
        record["points"] = [{("yield" if k == "yield_" else k): v for k, v in asdict(p).items()} for p in self.points]
        record["symgen_datasets_version"] = __version__
        return record


def table_points(votes: list[int], correct: list[bool], num_samples: int) -> list[CalibrationPoint]:
    """The calibration table from each question's winning votes (0: no winner) and whether its
    winner is correct (aligned lists); one point per V in 1..``num_samples``."""
    total = len(votes)
    points = []
    for v in range(1, num_samples + 1):
        kept = [ok for n, ok in zip(votes, correct) if n >= v]
        hits = sum(kept)
        points.append(CalibrationPoint(v, len(kept), hits, len(kept) / total if total else 0.0,
                                       hits / len(kept) if kept else None, hits / total if total else 0.0))
    return points


def calibrate(settings: GenerateSettings, **objects) -> Calibration:
    """Answer the labelled questions of ``settings.questions`` with ``settings.num_samples``
    candidates each, vote, and score the winners against the gold programs.

    Args:
        settings: the generation settings (``task``, ``questions``: the real rows with their gold
            programs, ``generator``, ``num_samples``, ...); ``min_votes`` is ignored (1), and
            ``exact``/``adaptive`` sampling becomes ``all`` (every question needs its K votes).
        objects: passed to :func:`~symgen_datasets.pipeline.run.run` (``generator``, ``loop``...).

    Returns:
        A :class:`Calibration`.

    Raises:
        InputError: no ``--questions``, or rows without the task's gold field (named by file and
            line); what :func:`~symgen_datasets.pipeline.run.generate` raises.
    """
    from ..tasks import get_task

    if not settings.questions:
        raise InputError("calibration needs labelled questions: give --questions FILE (the task's real dev rows "
                         "with their gold programs)")
    task = get_task(settings.task)
    options = task.options_with_defaults(settings.task_options)
    knowledge = task.load_knowledge(options)
    try:
        references = task.load_references(settings.questions, knowledge, settings.max_input_chars)
        # every question's K candidates (the vote counts of all K give one point per V)
        result = generate(replace(settings, min_votes=1, sampling="all" if settings.sampling != "fixed" else "fixed"),
                          write=False, **objects)
        if result is None:  # another process of `accelerate launch`: the main one reports
            return None  # type: ignore[return-value]
        rows = list(result.candidates)
        if len(rows) != len(references):
            raise InputError(f"{settings.questions}: {len(references)} labelled rows but {len(rows)} questions "
                             "were answered; check for blank questions")
        answer = task.answer_field
        winners = [row[answer] or None for row in rows]
        votes = [row["votes"] for row in rows]  # 0 where there is no winner
        first = [next((c for c in row["candidates"][:1] if c), None) for row in rows]
        judged = task.evaluate(references, winners, knowledge, settings.timeout_s)
        first_judged = task.evaluate(references, first, knowledge, settings.timeout_s)
        verifier = result.metadata.get("verifier") or {}
    finally:
        knowledge.cleanup()
    correct = [bool(r["correct"]) for r in judged.per_row]
    first_correct = [bool(r["correct"]) for r in first_judged.per_row]
    details = [{**reference, "candidates": row["candidates"], "candidate_status": row["candidate_status"],
                "winner": winner, "votes": n, "correct": ok, "first_candidate_correct": first_ok}
               for reference, row, winner, n, ok, first_ok in zip(references, rows, winners, votes, correct, first_correct)]
    return Calibration(
        task=task.name, generator=result.generator_provenance, num_questions=len(rows),
        num_samples=settings.num_samples, points=table_points(votes, correct, settings.num_samples),
        first_candidate_accuracy=sum(first_correct) / len(rows),
        verifier={k: v for k, v in verifier.items() if k not in ("name",)},
        settings={"num_samples": settings.num_samples, "temperature": settings.temperature, "seed": settings.seed,
                  "task_options": {k: (Path(v).name if k.endswith("_dir") and v else v) for k, v in options.items()}},
        references_file=Path(settings.questions).name, questions=details,
    )


def format_calibration(calibration: Calibration) -> str:
    """The table as Markdown (for the terminal and the README)."""
    lines = [f"{calibration.task}: {calibration.num_questions} labelled questions, K={calibration.num_samples}, "
             f"{calibration.generator}",
             "",
             "| V (--min-votes) | kept | yield | precision (kept rows correct) | correct kept / questions |",
             "|---:|---:|---:|---:|---:|"]
    for p in calibration.points:
        precision = f"{p.precision:.1%}" if p.precision is not None else "-"
        lines.append(f"| {p.min_votes} | {p.kept} | {p.yield_:.1%} | {precision} | {p.correct_share:.1%} |")
    lines.append(f"| no verifier (first candidate) | {calibration.num_questions} | 100.0% | "
                 f"{calibration.first_candidate_accuracy:.1%} | {calibration.first_candidate_accuracy:.1%} |")
    return "\n".join(lines)


def plot_calibration(calibration: Calibration, path: Path) -> Path:
    """Yield and precision against V (PNG), with the unverified first candidate's accuracy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    v = [p.min_votes for p in calibration.points]
    figure, axes = plt.subplots(figsize=(6, 3.6))
    axes.plot(v, [p.yield_ for p in calibration.points], "o-", label="yield (questions kept)")
    axes.plot([p.min_votes for p in calibration.points if p.precision is not None],
              [p.precision for p in calibration.points if p.precision is not None], "s-",
              label="precision (kept rows correct)")
    axes.plot(v, [p.correct_share for p in calibration.points], "^:", label="correct kept / questions")
    axes.axhline(calibration.first_candidate_accuracy, color="grey", linestyle="--",
                 label="no verifier: first candidate correct")
    axes.set_xlabel("V (--min-votes)")
    axes.set_xticks(v)
    axes.set_ylim(0, 1.02)
    generator = calibration.generator if len(calibration.generator) <= 90 else calibration.generator[:87] + "..."
    axes.set_title(f"{calibration.task}: {calibration.num_questions} labelled questions, K={calibration.num_samples}\n"
                   f"{generator}", fontsize=8)
    axes.legend(fontsize=7, loc="best")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def write_calibration(calibration: Calibration, output_dir: str | Path) -> Path:
    """Write ``calibration.json``, ``calibration.md``, ``calibration.png`` and ``questions.jsonl``
    (per question: candidates, winner, votes, correct) into ``output_dir``
    (whole or not at all; an earlier calibration there is replaced).

    Raises:
        InputError: ``output_dir`` exists and holds something else than a calibration.
    """
    output = Path(output_dir)
    if output.exists() and any(p.name != ".work" for p in output.iterdir()) and not (output / "calibration.json").is_file():
        raise InputError(f"{output}: exists and holds no calibration.json; choose a new --output-dir")
    output.mkdir(parents=True, exist_ok=True)
    staging = output / f".partial-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        (staging / "calibration.json").write_text(json.dumps(calibration.as_dict(), indent=1) + "\n", encoding="utf-8")
        (staging / "calibration.md").write_text(format_calibration(calibration) + "\n", encoding="utf-8")
        plot_calibration(calibration, staging / "calibration.png")
        with open(staging / "questions.jsonl", "w", encoding="utf-8") as handle:
            for row in calibration.questions:
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
        for item in staging.iterdir():
            os.replace(item, output / item.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    calibration.output = output
    return output
