"""pass@1 of Python functions with each problem's own tests, run in the sandbox.

HumanEval's protocol (Chen et al., 2021): a completion is correct when ``prompt + completion``,
then the problem's ``test`` and ``check(entry_point)``, runs without error; with one completion
per problem pass@1 is the share of problems solved. Completions run in
:class:`~symgen_datasets.verifiers.sandbox.Sandbox` processes, from worker processes.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Sequence

from ..verifiers.python import PythonVerifier
from . import Evaluation, share


def pass_at_1(predictions: Sequence[str | None], rows: Sequence[dict], sandbox: str = "auto",
              timeout_s: float = 10.0) -> Evaluation:
    """Run each prediction (a function body completing its row's ``prompt``) against its row's
    ``test``.

    Args:
        predictions: one body per row; ``None`` (no prediction) fails.
        rows: reference rows with ``prompt``, ``entry_point`` and ``test``.
        sandbox: the isolation (``auto``, ``bubblewrap``, ``namespaces``, ``none-i-accept-the-risk``).
        timeout_s: the time limit of one run (seconds).

    Returns:
        ``pass@1`` (primary); per row ``correct`` and, when it failed, ``error``.
    """
    jobs = [(i, row, p) for i, (row, p) in enumerate(zip(rows, predictions)) if p]
    per_row = [{"correct": False, "error": "no prediction"} for _ in rows]
    with PythonVerifier(SimpleNamespace(sandbox=sandbox), timeout_s=timeout_s) as verifier:
        batches = verifier.execute_stream((verifier.context(row), [p]) for _, row, p in jobs)
        for (i, _, _), batch in zip(jobs, batches):
            outcome = batch[0]
            per_row[i] = {"correct": outcome.ok, **({} if outcome.ok else {"error": outcome.error})}
    return Evaluation({"pass@1": share([r["correct"] for r in per_row])}, "pass@1", per_row)
