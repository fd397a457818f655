"""The end-of-run summary table that ``symgen generate`` prints."""

from __future__ import annotations

from typing import Any


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
        ("output", str(result.output) if result.output else "(not written)"),
    ]
    width = max(len(name) for name, _ in lines)
    rule = "-" * (width + 2 + max(len(value) for _, value in lines))
    return "\n".join([rule, *[f"{name:<{width}}  {value}" for name, value in lines], rule])
