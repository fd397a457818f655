"""Classification metrics (RTE and other GLUE-style label tasks): accuracy, the primary metric
as S3 and GLUE report it, and macro-averaged F1."""

from __future__ import annotations

from typing import Sequence

from . import Evaluation, share


def classification_scores(predictions: Sequence[int | None], gold: Sequence[int], labels: Sequence[str]) -> Evaluation:
    """Accuracy and macro F1 of label ids.

    Args:
        predictions: one label id (``0 .. len(labels) - 1``) or ``None`` (no prediction, wrong)
            per row.
        gold: the gold label ids, aligned.
        labels: the label names, in id order (the breakdown's keys).

    Returns:
        ``accuracy`` (primary) and ``macro_f1``; per row ``correct``, ``gold_label`` and
        ``predicted_label`` (names); the breakdown by gold label (``count``, ``accuracy``: the label's recall).
    """
    rows = [{"correct": p is not None and int(p) == int(g), "gold_label": labels[int(g)],
             "predicted_label": labels[int(p)] if p is not None and 0 <= int(p) < len(labels) else None}
            for p, g in zip(predictions, gold)]
    f1s, breakdown = [], {}
    for name in labels:
        tp = sum(r["gold_label"] == name and r["predicted_label"] == name for r in rows)
        predicted = sum(r["predicted_label"] == name for r in rows)
        actual = sum(r["gold_label"] == name for r in rows)
        f1s.append(2 * tp / (predicted + actual) if predicted + actual else 0.0)
        if actual:
            breakdown[name] = {"count": actual, "accuracy": tp / actual}
    metrics = {"accuracy": share([r["correct"] for r in rows]), "macro_f1": sum(f1s) / len(f1s) if f1s else 0.0}
    return Evaluation(metrics, "accuracy", rows, breakdown)
