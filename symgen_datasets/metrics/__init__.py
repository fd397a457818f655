"""Evaluation metrics of every task, behind :meth:`Task.evaluate
<symgen_datasets.tasks.base.Task.evaluate>`, and one local ``evaluate`` module backed by them.

One module per language family: :mod:`.sql` (execution accuracy with the official Spider
test-suite evaluator's semantics, exact match, valid SQL, hardness), :mod:`.text` (MTOP's exact
match and template accuracy, Break's normalised exact match, NL2Bash's character BLEU and exact
match), :mod:`.python` (pass@1 with each problem's own tests, in the sandbox).

The ``evaluate`` module (``evaluate.load`` works offline on a path)::

    import evaluate, json
    from symgen_datasets.metrics import EVALUATE_MODULE

    metric = evaluate.load(EVALUATE_MODULE, "mtop")        # the configuration is the task's name
    metric.compute(predictions=["[IN:GET_WEATHER ]"], references=[json.dumps(gold_row)])
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from typing import Any

#: The folder of the local ``evaluate`` module (``evaluate.load(EVALUATE_MODULE, TASK)``).
EVALUATE_MODULE = str(resources.files("symgen_datasets.metrics").joinpath("symgen_task_metrics"))


@dataclass
class Evaluation:
    """Metrics of a set of predictions against reference rows.

    Attributes:
        metrics: name -> value, fractions in [0, 1] (e.g. ``execution_accuracy``).
        primary: the name of the task's main metric (what ``--json`` leads with, what S3 tracks).
        per_row: one dict per reference row, aligned: ``correct`` (bool, by the primary metric)
            and what else the metric knows (``valid``, ``hardness``, ``error``...).
        breakdown: group -> metrics of that group (e.g. Spider's hardness levels, with ``count``).
    """

    metrics: dict[str, float]
    primary: str
    per_row: list[dict[str, Any]] = field(default_factory=list)
    breakdown: dict[str, dict[str, float]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """The metrics and breakdown as one JSON-able object (primary metric first)."""
        return {self.primary: self.metrics[self.primary],
                **{k: v for k, v in self.metrics.items() if k != self.primary},
                **({"breakdown": self.breakdown} if self.breakdown else {}),
                "count": len(self.per_row)}


def share(flags: list[bool]) -> float:
    """The fraction of true flags (0.0 for none)."""
    return sum(flags) / len(flags) if flags else 0.0


__all__ = ["EVALUATE_MODULE", "Evaluation", "share"]
