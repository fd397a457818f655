"""``symgen check``: validate answers with a task's verifier, without an LLM.

Each input row's answer (the task's answer field) goes through the task's verifier as the single
candidate of its question, exactly as a generated candidate would: the way to see what the
verifier accepts, to measure it on real gold data, and to clean a dataset.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..io import MAX_INPUT_CHARS, check_lengths, read_records, validate_record
from ..tasks import Task


@dataclass
class CheckReport:
    """The outcome of :func:`check_answers`.

    Attributes:
        total: rows checked.
        valid: rows whose answer the verifier accepted (status ``ok``).
        by_status: rows per outcome status.
        reasons: the most frequent reasons for rejection, ``(reason, rows)``, most frequent first.
    """

    total: int
    valid: int
    by_status: dict[str, int]
    reasons: list[tuple[str, int]] = field(default_factory=list)


def check_answers(task: Task, input_path: str | Path, output_path: str | Path | None = None,
                  task_options: dict[str, Any] | None = None, timeout_s: float = 5.0,
                  max_chars: int = MAX_INPUT_CHARS) -> CheckReport:
    """Verify every row of ``input_path`` (JSON Lines or a JSON array with the task's
    demonstration fields) as a single candidate.

    Args:
        task: the task.
        input_path: the rows (other fields are kept for the verifier: e.g. HumanEval's ``test``).
        output_path: if given, one JSON line per input row, in order: ``{"valid": bool,
            "status": ..., "reason": ...}`` (``reason`` is ``null`` for valid rows); written
            whole or not at all.
        task_options: the task's own options (e.g. ``db_dir``).
        timeout_s: the time limit of one answer's verification.
        max_chars: the longest field accepted.

    Raises:
        InputError: a malformed file or row (named with its line), or a context the task's
            knowledge cannot serve.
    """
    knowledge = task.load_knowledge(task.options_with_defaults(task_options))
    rows = []
    for where, record in read_records(input_path):
        check_lengths(record, task.demonstration_fields, max_chars, where)
        validate_record(record, task.demonstration_schema, where)
        knowledge.check_record(record, where)
        rows.append(record)
    if not rows:
        raise InputError(f"{input_path}: no rows; expected JSON lines with {', '.join(task.demonstration_fields)}")
    knowledge.prepare({name: row[name] for name in task.context_fields} for row in rows)
    try:
        with task.make_verifier(knowledge, timeout_s) as verifier:
            outcomes = [batch[0] for batch in verifier.execute_stream(
                (verifier.context(row), [row[task.answer_field]]) for row in rows)]
    finally:
        knowledge.cleanup()
    statuses = Counter(outcome.status for outcome in outcomes)
    reasons = Counter(_reason(outcome.error) for outcome in outcomes if not outcome.ok)
    if output_path is not None:
        lines = [json.dumps({"valid": o.ok, "status": o.status, "reason": None if o.ok else o.error}) for o in outcomes]
        output = Path(output_path)
        partial = output.with_name(f".{output.name}.partial")
        partial.write_text("\n".join(lines) + "\n", encoding="utf-8")
        partial.replace(output)
    return CheckReport(len(rows), statuses.get("ok", 0), dict(statuses.most_common()), reasons.most_common(5))


def _reason(error: str | None) -> str:
    """A rejection reason without the details that make each one unique (quoted text, numbers)."""
    text = (error or "?").splitlines()[0]
    return text if len(text) <= 100 else text[:97] + "..."
