"""New examples for S3: seed synthesis, the task model's errors, and their extrapolation.

* Seed synthesis (round 0): SymGen generation (:func:`symgen_datasets.pipeline.run.run`) for tasks
  with a verifier; label-conditioned generation (ZeroGen, Ye et al. 2022) for classification: the
  LLM is told a label and writes a complete row for it.
* Errors: the validation rows the task model got wrong, with its prediction and, for tasks with a
  verifier, what the gold program and the prediction did when run (the verifier's outcome).
* Extrapolation (S3, Wang et al. 2023, §3.2): errors sharing a context (SQL: a database) are shown
  a few at a time and the LLM writes new examples of the same kind; for SymGen tasks these are new
  questions, answered and verified by the pipeline like any question.

Every request goes through the response cache of the round's work folder, so a resumed round
sends nothing twice.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from pathlib import Path
from typing import Any, Iterable, Sequence

from ..generators import EventLoopThread, Generator, SamplingParams, derive_seed, sample_many
from ..tasks import Task, TaskKnowledge, question_key


def exact_key(task: Task, row: dict) -> tuple:
    """A row's input as given (the task's question fields), for exact matching."""
    return tuple(str(row[name]) for name in task.question_fields)


def normal_key(task: Task, row: dict) -> str:
    """A row's input normalised (lower case, words only, :func:`question_key`), for matching
    that ignores case, punctuation and spacing."""
    return question_key(" | ".join(str(row[name]) for name in task.question_fields))


class InputIndex:
    """The inputs seen so far (exact and normalised keys) of a task's rows."""

    def __init__(self, task: Task, rows: Iterable[dict] = ()):
        self.task = task
        self.exact: set[tuple] = set()
        self.normal: set[str] = set()
        self.add_all(rows)

    def add(self, row: dict) -> None:
        self.exact.add(exact_key(self.task, row))
        self.normal.add(normal_key(self.task, row))

    def add_new(self, row: dict) -> bool:
        """Add ``row`` unless its input is in the index already; whether it was new."""
        if self.match(row):
            return False
        self.add(row)
        return True

    def add_all(self, rows: Iterable[dict]) -> None:
        for row in rows:
            self.add(row)

    def match(self, row: dict) -> str | None:
        """``"exact"`` or ``"normalised"`` when ``row``'s input is in the index, else ``None``."""
        if exact_key(self.task, row) in self.exact:
            return "exact"
        if normal_key(self.task, row) in self.normal:
            return "normalised"
        return None


def outcome_text(result) -> str:
    """A verifier's :class:`~symgen_datasets.verifiers.base.ExecutionResult` in a few words
    (``error: ...`` or ``3 rows: ...``), for the extrapolation prompt."""
    if not result.ok:
        return f"error: {(result.error or result.status)[:160]}"
    detail = f": {result.detail[:160]}" if result.detail else ""
    return f"{result.num_rows} row{'s' if result.num_rows != 1 else ''}{detail}"


def collect_errors(task: Task, references: Sequence[dict], predictions: Sequence[Any], per_row: Sequence[dict],
                   verifier=None, limit: int | None = None) -> list[dict]:
    """The rows the task model got wrong, in reference order, at most ``limit``.

    Returns:
        Reference rows with ``prediction`` (the model's answer) and, when a ``verifier`` is
        given, ``gold_outcome`` and ``prediction_outcome`` (what each did when run in the
        verifier's sandbox), the fields :meth:`Task.extrapolation_prompt` shows.
    """
    errors = []
    for row, prediction, judged in zip(references, predictions, per_row):
        if judged.get("correct"):
            continue
        error = dict(row, prediction=prediction)
        if verifier is not None:
            programs = [row[task.answer_field]] + ([prediction] if prediction else [])
            results = verifier.execute(verifier.context(row), programs)
            error["gold_outcome"] = outcome_text(results[0])
            error["prediction_outcome"] = outcome_text(results[1]) + (" (a different result)" if results[1].ok else "") \
                if prediction else "no prediction"
        errors.append(error)
        if limit is not None and len(errors) >= limit:
            break
    return errors


def _groups(task: Task, errors: Sequence[dict], per_prompt: int) -> list[tuple[dict, list[dict]]]:
    """Errors grouped by :meth:`Task.extrapolation_context` (first-seen order), in chunks of
    ``per_prompt``."""
    by_context: OrderedDict[str, tuple[dict, list[dict]]] = OrderedDict()
    for error in errors:
        context = task.extrapolation_context(error)
        by_context.setdefault(json.dumps(context, sort_keys=True, default=str), (context, []))[1].append(error)
    chunks = []
    for context, members in by_context.values():
        for start in range(0, len(members), per_prompt):
            chunks.append((context, members[start:start + per_prompt]))
    return chunks


def extrapolate(task: Task, knowledge: TaskKnowledge, demonstrations: Sequence[dict], generator: Generator,
                loop: EventLoopThread, errors: Sequence[dict], *, per_prompt: int, per_error: int, temperature: float,
                seed: int, round_index: int, seen: InputIndex) -> tuple[list[dict], dict[str, int]]:
    """S3's error extrapolation: ``per_error`` new examples asked for each error, the errors of
    one context shown ``per_prompt`` at a time. With no errors, seed synthesis for
    label-conditioned tasks: ``per_error`` rows asked for each of the task's ``seed_contexts``.

    New examples whose input is already in ``seen`` (earlier rounds, the validation set, the
    demonstrations, or this round) are dropped; the others are added to ``seen``.

    Returns:
        ``(rows, counts)``: question rows (SymGen tasks) or complete rows (label-conditioned
        tasks); counts of ``prompts``, ``completions``, ``parsed``, ``duplicates``, ``new``.

    Raises:
        GenerationError: the generator failed for good. BudgetExhausted: ``--max-requests``.
        InputError: a prompt cannot fit the model.
    """
    from tqdm.auto import tqdm

    params = SamplingParams(temperature, task.sampling.question_max_new_tokens, task.sampling.question_stop)
    limit = generator.max_prompt_tokens(params.max_new_tokens)
    if errors:
        chunks = _groups(task, errors, per_prompt)
    else:
        chunks = [(context, []) for context in task.seed_contexts(knowledge)]
    requests = []
    for number, (context, members) in enumerate(chunks):
        prompt = task.extrapolation_prompt(context, members, knowledge, demonstrations, generator.count_tokens, limit)
        samples = per_error * max(1, len(members))
        requests.append((prompt, params, [derive_seed(seed, "s3", round_index, number, i) for i in range(samples)]))
    counts = {"prompts": len(requests), "completions": 0, "parsed": 0, "duplicates": 0, "new": 0}
    rows: list[dict] = []
    with tqdm(total=len(requests), desc=f"round {round_index}: {'extrapolation' if errors else 'seed synthesis'}",
              unit="prompt") as bar:
        for start in range(0, len(requests), 32):
            batch = requests[start:start + 32]
            for (context, _), completions in zip(chunks[start:start + 32], loop.run(sample_many(generator, batch))):
                for completion in completions:
                    counts["completions"] += 1
                    row = task.parse_extrapolated(completion.text, context)
                    if row is None:
                        continue
                    counts["parsed"] += 1
                    if not seen.add_new(row):
                        counts["duplicates"] += 1
                        continue
                    rows.append(row)
            bar.update(len(batch))
    counts["new"] = len(rows)
    return rows, counts


def write_jsonl(path: Path, rows: Iterable[dict]) -> Path:
    """Write rows as JSON Lines, atomically (a temporary file renamed into place)."""
    import os

    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial-{os.getpid()}")
    with open(partial, "w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    os.replace(partial, path)
    return path
