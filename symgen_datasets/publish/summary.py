"""The end-of-run summary table that ``symgen generate`` prints."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

#: The calibration of the embedded demo model that ships with a task (`symgen calibrate` output).
EMBEDDED_CALIBRATION = "calibration_embedded.json"


def _bill_lines(bill: dict) -> list[tuple[str, str]]:
    """The token bill's lines (requests, prompt and completion tokens billed, tokens from the cache)."""
    names = {"requests": "generation requests", "prompt_tokens": "prompt tokens billed",
             "completion_tokens": "completion tokens billed", "cached_tokens": "tokens from the cache"}
    lines = [(names[name], f"{bill[name]:,}") for name in names if name in (bill or {})]
    if (bill or {}).get("answer_tokens") and bill.get("fixed_answer_tokens"):
        lines.append(("saving against SymGen's", f"{bill['fixed_answer_tokens'] / bill['answer_tokens']:.1f}x fewer "
                      f"answer-generation tokens ({bill['answer_tokens']:,} vs {bill['fixed_answer_tokens']:,} for one "
                      "request per candidate)"))
    return lines


def embedded_calibration(task: Any, min_votes: int) -> str | None:
    """One line on how far the embedded model's kept rows can be trusted at ``min_votes``, from
    the task's packaged calibration (:data:`EMBEDDED_CALIBRATION`), or ``None`` when it ships none."""
    path = Path(task.packaged) / EMBEDDED_CALIBRATION
    if not path.is_file():
        return None
    record = json.loads(path.read_text())
    points = {p["min_votes"]: p for p in record["points"]}
    point = points.get(min(min_votes, record["num_samples"]))
    if point is None or point["precision"] is None:
        return None
    return (f"{point['precision']:.0%} of kept rows correct at V={point['min_votes']} "
            f"(K={record['num_samples']}, {record['num_questions']} real dev questions; no verifier: "
            f"{record['first_candidate_accuracy']:.0%}): a demo model, see `symgen calibrate`")


def format_summary(result: Any) -> str:
    """The end-of-run summary table (plain text) of a
    :class:`~symgen_datasets.pipeline.run.GenerateResult`."""
    counts = result.counts
    questions = counts.get("questions", 0)
    kept = counts.get("questions_kept", 0)
    sampled = counts.get("candidates_sampled", 0)
    word = result.columns.outcome_word
    lines = [
        ("generator", result.generator_provenance),
        *[(name.replace("_", " "), str(value)) for name, value in counts.items()],
        ("kept / questions", f"{kept / questions:.1%}" if questions else "-"),
        (f"{word} / sampled", f"{counts.get(f'candidates_{word}', 0) / sampled:.1%}" if sampled else "-"),
        ("retried requests", str(result.retries)),
        ("completions from the cache", str(result.cached)),
        *_bill_lines(result.bill),
        *([("cost", f"{result.metadata['bill']['cost']:.4f} at {result.settings.price_per_mtok} per million tokens")]
          if "cost" in (getattr(result, "metadata", None) or {}).get("bill", {}) else []),
        ("output", str(result.output) if result.output else "(not written)"),
    ]
    if result.generator_spec == "embedded":
        from ..tasks import get_task

        trust = embedded_calibration(get_task(result.settings.task), result.settings.min_votes)
        if trust:
            lines.insert(1, ("embedded model, calibrated", trust))
    width = max(len(name) for name, _ in lines)
    rule = "-" * (width + 2 + max(len(value) for _, value in lines))
    return "\n".join([rule, *[f"{name:<{width}}  {value}" for name, value in lines], rule])
