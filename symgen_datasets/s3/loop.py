"""``symgen s3``: S3's loop (Wang et al., Findings of EMNLP 2023, "Let's Synthesize Step by Step").

Round 0 synthesises a seed set (SymGen generation, or label-conditioned generation for
classification); every round then trains the task model on all the data so far (the training
script, in this process), evaluates it on the small real validation set (and on a held-out test
set), and the next round asks the LLM to extrapolate its validation errors into new examples,
verified by the task's verifier where it has one, deduplicated against everything before. Every
round is a dataset folder (and, with ``push_to_hub``, a tagged version) whose card records its
parent, the errors extrapolated, the examples added, the accuracies before and after, and the
no-leak check.

The output folder::

    OUT/s3_state.json             the settings and every finished round (what --resume reads)
    OUT/validation.jsonl          the validation rows; OUT/test.jsonl: the test rows, minus any
                                  that are also validation rows
    OUT/round-N/dataset/          the round's dataset (parquet, card, accuracy plot)
    OUT/round-N/model/            the task model trained on it
    OUT/round-N/validation/, test/  its evaluations (metrics.json, predictions.jsonl)
    OUT/round-N/work/             response caches and the generation pipeline's work folder

A round is finished when ``s3_state.json`` lists it (written atomically after the round's last
step); ``--resume`` skips finished rounds and redoes the unfinished one from its response caches,
so no finished request or round is repeated.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import __version__
from ..errors import InputError
from ..io import read_records
from ..prompts import template_hash
from ..pipeline.evaluate import evaluate, file_sha256, model_predictions
from ..pipeline.settings import GenerateSettings
from ..tasks import Task, get_task
from .synthesis import InputIndex, collect_errors, extrapolate, write_jsonl

STATE_FILE = "s3_state.json"
PLOT_FILE = "s3_accuracy.png"


@dataclass
class S3Settings:
    """The settings of one ``symgen s3`` run.

    Attributes:
        generate: generation settings (task, task options, generator, K, V, temperature, seed,
            demonstrations, ...); ``num_questions`` is the seed set's size.
        validation: the small real validation set whose errors are extrapolated (JSONL/JSON with
            the task's fields and gold answers).
        output_dir: the run's folder (see the module's docstring).
        rounds: error-extrapolation rounds after round 0 (versions: ``rounds + 1``).
        model: the task model's base model (``embedded``: SmolLM2-135M, or MiniLM for
            classification).
        train: :class:`~symgen_datasets.training.TrainConfig` values for each round's training
            (``{"max_steps": 60}`` ...; ``symgen s3``'s trailing training flags); the dataset,
            output folder, task, base model, seed and evaluation are the round's.
        test: held-out real rows for the test accuracy (default: the task's packaged dev set);
            rows that are also validation rows are left out of it.
        patience: stop when the validation accuracy has not improved for this many rounds.
        test_every: evaluate the held-out test set every this many rounds; 0 (the default): only
            on the run's last round (``rounds``, or the one after which ``patience`` stops it).
            The test set is the costly evaluation (GeoQuery: 250 rows, each generated up to the
            model's target length), and only the last round's number is reported.
        errors_per_prompt: errors shown in one extrapolation prompt (same context).
        examples_per_error: new examples asked per error (per label for seed synthesis).
        max_errors: errors extrapolated per round at most (the first ones in file order).
        push_to_hub: a dataset repository each round is pushed to, tagged ``version`` with its
            minor number raised by the round (1.0.0, 1.1.0, ...).
        resume: continue the run in ``output_dir``.
    """

    generate: GenerateSettings
    validation: str
    output_dir: str
    rounds: int = 2
    model: str = "embedded"
    train: dict[str, Any] = field(default_factory=dict)
    test: str | None = None
    patience: int | None = None
    test_every: int = 0
    errors_per_prompt: int = 3
    examples_per_error: int = 2
    max_errors: int | None = 100
    push_to_hub: str | None = None
    version: str = "1.0.0"
    private: bool = False
    resume: bool = False

    def check(self) -> None:
        """Raise :class:`InputError` naming the option when a value is out of range."""
        self.generate.check()
        for name, value, least in (("--rounds", self.rounds, 0), ("--errors-per-prompt", self.errors_per_prompt, 1),
                                   ("--examples-per-error", self.examples_per_error, 1),
                                   ("--patience", self.patience, 1), ("--max-errors", self.max_errors, 1),
                                   ("--test-every", self.test_every, 0)):
            if value is not None and value < least:
                raise InputError(f"{name} {value}: must be at least {least}")
        from ..hub.push import parse_version

        parse_version(self.version)
        self.training_config("-", "-").check()

    #: TrainConfig fields a round sets itself (``train`` may not)
    ROUND_TRAINING = ("dataset", "output_dir", "task", "model", "eval_strategy", "seed", "task_options")

    def training_config(self, dataset: str, output_dir: str):
        """The :class:`~symgen_datasets.training.TrainConfig` of a round's training: ``train``
        over the round's dataset, folder, task, base model and seed, without evaluation.

        Raises:
            InputError: ``train`` names a field TrainConfig does not have, or one a round sets.
        """
        from dataclasses import fields as dataclass_fields

        from ..training.config import TrainConfig

        known = {f.name for f in dataclass_fields(TrainConfig)}
        wrong = sorted(name for name in self.train if name not in known or name in self.ROUND_TRAINING)
        if wrong:
            raise InputError(f"training settings {', '.join(wrong)}: not settings of `symgen train` a round may change "
                             "(see `symgen train --help`)")
        options = {name: value for name, value in self.generate.task_options.items() if value is not None}
        return TrainConfig(dataset=dataset, output_dir=output_dir, task=self.generate.task, model=self.model,
                           eval_strategy="no", seed=self.generate.seed, task_options=options, **self.train)

    def fingerprint(self) -> dict[str, Any]:
        """What a resumed run must share with the interrupted one (``rounds`` and ``patience``
        may change)."""
        generate = dataclasses.asdict(self.generate)
        for name in ("output", "overwrite", "work_dir", "max_requests", "concurrency", "request_timeout_s", "max_retries"):
            generate.pop(name, None)
        if generate.get("demos"):  # by content: an edited file under the same path is another run
            generate["demos"] = {"file": Path(generate["demos"]).name, "sha256": file_sha256(generate["demos"])}
        return {"generate": generate, "validation_sha256": file_sha256(self.validation),
                "test_sha256": file_sha256(self.test) if self.test else None, "model": self.model,
                "train": dict(self.train), "errors_per_prompt": self.errors_per_prompt,
                "examples_per_error": self.examples_per_error, "max_errors": self.max_errors,
                "push_to_hub": self.push_to_hub, "version": self.version}


@dataclass
class S3Result:
    """What :func:`run_s3` made: one record per finished round (see the round cards' ``s3``
    block) and the output folder."""

    rounds: list[dict]
    output: Path
    stopped_early: bool = False


def round_version(base: str, round_index: int) -> str:
    """The version of round ``round_index``: ``base`` with its minor number raised by it."""
    from ..hub.push import parse_version

    major, minor, patch = parse_version(base)
    return f"{major}.{minor + round_index}.{patch}"


def _write_json(path: Path, data: Any) -> None:
    partial = path.with_name(f".{path.name}.partial-{os.getpid()}")
    partial.write_text(json.dumps(data, indent=1, default=str) + "\n", encoding="utf-8")
    os.replace(partial, path)


def _read_rows(task: Task, path: str | Path, knowledge, what: str) -> list[dict]:
    """Reference rows of ``path`` (the task's checks), or InputError naming ``what``."""
    try:
        return task.load_references(path, knowledge)
    except InputError as error:
        raise InputError(f"{what}: {error}") from None


def run_s3(settings: S3Settings, task: Task | None = None) -> S3Result:
    """Run (or with ``settings.resume`` continue) S3's loop; see the module's docstring.

    Raises:
        InputError: bad settings or files (named), an existing output folder without
            ``resume``, or a resumed run whose settings differ from the interrupted one's.
        GenerationError: the generator failed for good. BudgetExhausted: ``--max-requests``
            (resumable with ``--resume``). HubError: a push failed.
    """
    from ..generators import EventLoopThread, RetryPolicy, from_spec

    settings.check()
    task = task or get_task(settings.generate.task)
    if task.synthesis == "symgen" and task.verifier_class is None:
        raise InputError(f"task {task.name} has no verifier: S3 needs one for SymGen synthesis")
    output = Path(settings.output_dir)
    state_path = output / STATE_FILE
    fingerprint = settings.fingerprint()
    if settings.resume:
        if not state_path.is_file():
            raise InputError(f"--resume: {output} holds no {STATE_FILE}; start the run without --resume")
        state = json.loads(state_path.read_text(encoding="utf-8"))
        if state["settings"] != fingerprint:
            changed = sorted(k for k in fingerprint if fingerprint[k] != state["settings"].get(k))
            raise InputError(f"--resume: the settings differ from the interrupted run's ({', '.join(changed)}); "
                             "resume with the same settings, or start a new --output-dir")
    else:
        if output.exists() and any(output.iterdir()):
            raise InputError(f"{output}: exists and is not empty; continue its run with --resume, or choose a new "
                             "--output-dir")
        state = {"settings": fingerprint, "rounds": []}
    output.mkdir(parents=True, exist_ok=True)
    _write_json(state_path, state)

    options = task.options_with_defaults(settings.generate.task_options)
    knowledge = task.load_knowledge(options, output / "knowledge")
    validation = _read_rows(task, settings.validation, knowledge, f"--validation {settings.validation}")
    validation_index = InputIndex(task, validation)
    write_jsonl(output / "validation.jsonl", validation)
    test_path = _test_file(task, settings, knowledge, validation_index, output)
    demonstrations, demos_removed = _clean_demonstrations(task, settings, validation_index, output)
    generate = dataclasses.replace(settings.generate, demos=str(output / "demonstrations.jsonl"))

    generator = from_spec(generate.generator, concurrency=generate.concurrency,
                          retry=RetryPolicy(max_attempts=generate.max_retries),
                          request_timeout_s=generate.request_timeout_s)
    loop = EventLoopThread()
    verifier = None
    try:
        knowledge.prepare([{name: row[name] for name in task.context_fields} for row in validation])
        if task.verifier_class is not None:
            verifier = task.make_verifier(knowledge, generate.timeout_s)
        rows = _rows_of(output, state["rounds"][-1]) if state["rounds"] else []
        print(f"symgen s3: {_evaluation_estimate(task, settings, validation, test_path)}", file=sys.stderr)
        stopped = False
        for round_index in range(len(state["rounds"]), settings.rounds + 1):
            if settings.patience and _stale_rounds(state["rounds"]) >= settings.patience:
                stopped = True
                break
            record, rows = _run_round(round_index, settings, task, knowledge, generate, generator, loop, verifier,
                                      demonstrations, demos_removed, validation, validation_index, test_path, rows,
                                      state["rounds"], output)
            state["rounds"].append(record)
            _write_json(state_path, state)  # the round is finished
        return S3Result(state["rounds"], output, stopped)
    finally:
        if verifier is not None:
            verifier.close()
        loop.run(generator.aclose())
        loop.close()
        knowledge.cleanup()


def _stale_rounds(rounds: list[dict]) -> int:
    """Rounds since the validation accuracy last improved (for ``--patience``)."""
    stale, best_so_far = 0, None
    for record in rounds:
        if best_so_far is None or record["validation_after"] > best_so_far:
            best_so_far, stale = record["validation_after"], 0
        else:
            stale += 1
    return stale


def _test_file(task: Task, settings: S3Settings, knowledge, validation_index: InputIndex, output: Path) -> Path | None:
    """The held-out test rows (``--test`` or the packaged dev set) minus any that are
    validation rows, written to ``OUT/test.jsonl``; ``None`` when there is no test set."""
    source = settings.test or task.references_path()
    if source is None:
        return None
    rows = _read_rows(task, source, knowledge, f"--test {source}")
    kept = [row for row in rows if not validation_index.match(row)]
    if not kept:
        raise InputError(f"--test {source}: every row is also a validation row; give a held-out test set")
    return write_jsonl(output / "test.jsonl", kept)


def _clean_demonstrations(task: Task, settings: S3Settings, validation_index: InputIndex,
                          output: Path) -> tuple[list[dict], int]:
    """The demonstrations, without any whose input is a validation row (written to
    ``OUT/demonstrations.jsonl``, which every round's prompts use), and how many were removed."""
    if task.synthesis == "symgen":
        demos = task.load_demonstrations(settings.generate.demos, settings.generate.max_input_chars)
    else:
        path = settings.generate.demos or task.packaged / "10_shot.jsonl"
        demos = [record for _, record in read_records(path)]
    kept = [d for d in demos if not validation_index.match(d)]
    if not kept:
        raise InputError("every demonstration is also a validation row; give other --demos")
    write_jsonl(output / "demonstrations.jsonl", kept)
    return kept, len(demos) - len(kept)


def _rows_of(output: Path, record: dict) -> list[dict]:
    """The training rows of a finished round (its dataset folder)."""
    import datasets

    from ..publish import quiet_datasets

    with quiet_datasets():
        return datasets.load_dataset(str(output / record["dataset"]), "default", split="train").to_list()


def _run_round(round_index: int, settings: S3Settings, task: Task, knowledge, generate: GenerateSettings, generator,
               loop, verifier, demonstrations: list[dict], demos_removed: int, validation: list[dict],
               validation_index: InputIndex, test_path: Path | None, previous_rows: list[dict],
               history: list[dict], output: Path) -> tuple[dict, list[dict]]:
    """One round: new examples (seed synthesis or extrapolation), the round's dataset, the task
    model trained on it, its evaluations, the card, the push. Returns the round's record and
    its rows."""
    from ..generators.cache import CachedGenerator, ResponseCache

    folder = output / f"round-{round_index}"
    work = folder / "work"
    work.mkdir(parents=True, exist_ok=True)
    previous = history[-1] if history else None
    seen = InputIndex(task, [*previous_rows, *demonstrations])
    seen.add_all(validation)
    errors: list[dict] = []
    synthesis_meta: dict[str, Any] = {}
    cache = ResponseCache(work / "responses.sqlite")
    cached = CachedGenerator(generator, cache, generate.max_requests)
    try:
        loop.run(cached.connect())
        if previous is not None:
            errors = _errors_of(task, output / previous["validation_dir"], verifier, settings.max_errors)
            write_jsonl(folder / "errors.jsonl", errors)
        if task.synthesis == "symgen" and previous is None:
            new_rows, counts, synthesis_meta = _symgen(task, generate, generator, loop, work, None,
                                                       generate.num_questions or task.default_num_questions)
            new_rows = [row for row in new_rows if seen.add_new(row)]
        elif task.synthesis == "symgen":
            questions, counts = extrapolate(
                task, knowledge, demonstrations, cached, loop, errors, per_prompt=settings.errors_per_prompt,
                per_error=settings.examples_per_error, temperature=generate.temperature, seed=generate.seed,
                round_index=round_index, seen=seen)
            new_rows = []
            if questions:
                questions_file = write_jsonl(folder / "questions.jsonl", questions)
                new_rows, answer_counts, synthesis_meta = _symgen(task, generate, generator, loop, work, questions_file,
                                                                  None)
                counts.update({f"answered_{k}": v for k, v in answer_counts.items()})
        else:  # label-conditioned: complete rows, seed (no errors) or extrapolated
            if previous is not None and not errors:
                new_rows, counts = [], {"prompts": 0, "new": 0}
            else:
                new_rows, counts = extrapolate(
                    task, knowledge, demonstrations, cached, loop, errors, per_prompt=settings.errors_per_prompt,
                    per_error=_seed_per_label(task, knowledge, generate) if previous is None else settings.examples_per_error,
                    temperature=generate.temperature, seed=generate.seed, round_index=round_index, seen=seen)
            new_rows = [dict(row, generator=generator.provenance) for row in new_rows]
    finally:
        cache.close()

    if previous is not None and not new_rows:
        # nothing new survived parsing, deduplication and verification: the round is recorded as
        # such, the previous round's dataset and model stand, and the loop goes on (--patience)
        record = {**{k: previous[k] for k in ("version", "dataset", "validation_dir", "validation_after", "test_after",
                                              "metric", "rows")},
                  "round": round_index, "parent_version": previous["version"], "errors_extrapolated": len(errors),
                  "examples_added": 0, "synthesis": "error extrapolation", "counts": counts,
                  "validation_before": previous["validation_after"], "test_before": previous["test_after"],
                  "no_new_rows": True, "leak_check": previous.get("leak_check")}
        print(f"round {round_index}: no new example survived parsing, deduplication and verification "
              f"({', '.join(f'{k} {v}' for k, v in counts.items())}); the dataset and model of round "
              f"{previous['round']} stand", file=sys.stderr)
        if test_path is not None and record["test_after"] is None and _tests_this_round(settings, round_index,
                                                                                         [*history, record]):
            model = (output / record["dataset"]).parent / "model"
            predict, _ = model_predictions(str(model), task)
            record["test_after"] = _test_accuracy(task, settings, predict, model, test_path, folder)
        return record, previous_rows

    new_rows = [dict(row, s3_round=round_index) for row in new_rows]
    rows = [*previous_rows, *new_rows]
    leaks = _leak_check(task, rows, validation_index)
    rows = [row for row in rows if not validation_index.match(row)]
    if not rows:
        raise InputError(f"round {round_index}: no training rows (the LLM's examples were all unparsable, duplicates "
                         "or rejected by the verifier); raise --num-questions or --num-samples, or lower --min-votes")

    version = round_version(settings.version, round_index)
    record = {
        "round": round_index, "version": version,
        "parent_version": previous["version"] if previous else None,
        "dataset": str((folder / "dataset").relative_to(output)),
        "validation_dir": str((folder / "validation").relative_to(output)),
        "errors_extrapolated": len(errors), "examples_added": len(new_rows), "rows": len(rows),
        "synthesis": "seed: " + ("SymGen generation" if task.synthesis == "symgen" else "label-conditioned generation")
        if previous is None else "error extrapolation",
        "counts": counts, "leak_check": {**leaks, "demonstrations_removed": demos_removed},
        "validation_before": previous["validation_after"] if previous else None,
        "test_before": previous["test_after"] if previous else None,
        "validation_after": None, "test_after": None, "metric": task.primary_metric,
    }
    meta = _round_meta(task, settings, generate, generator, synthesis_meta, record, history, demonstrations)
    dataset_folder = _write_round_dataset(folder / "dataset", rows, meta, [*history, record])

    model_folder = folder / "model"
    shutil.rmtree(model_folder, ignore_errors=True)  # an interrupted training starts again
    _train(task, settings, dataset_folder, model_folder)
    predict, _ = model_predictions(str(model_folder), task)
    source = f"model:{model_folder}"
    started = time.monotonic()
    evaluated = evaluate(task, predict, source, references=str(output / "validation.jsonl"),
                         task_options=settings.generate.task_options, output_dir=folder / "validation")
    per_row = (time.monotonic() - started) / max(1, len(validation))
    record["validation_after"] = evaluated.evaluation.metrics[task.primary_metric]
    if test_path is not None:
        test_rows = sum(1 for _ in read_records(test_path))
        print(f"round {round_index}: validation predicted at {per_row:.2f} s a row; the {test_rows} test rows take "
              f"about {per_row * test_rows / 60:.1f} min each time they are predicted", file=sys.stderr)
    if test_path is not None and _tests_this_round(settings, round_index, [*history, record]):
        record["test_after"] = _test_accuracy(task, settings, predict, model_folder, test_path, folder)
    meta = _round_meta(task, settings, generate, generator, synthesis_meta, record, history, demonstrations)
    _update_round_card(dataset_folder, meta, [*history, record])  # the rows were written before training
    if settings.push_to_hub:
        record["pushed"] = _push(dataset_folder, settings, version)
    return record, rows


def _test_accuracy(task: Task, settings: S3Settings, predict, model_folder: Path, test_path: Path, folder: Path) -> float:
    """The model's primary metric on the held-out test set (its evaluation in ``folder/test``)."""
    tested = evaluate(task, predict, f"model:{model_folder}", references=str(test_path),
                      task_options=settings.generate.task_options, output_dir=folder / "test")
    return tested.evaluation.metrics[task.primary_metric]


def _tests_this_round(settings: S3Settings, round_index: int, rounds: list[dict]) -> bool:
    """Whether round ``round_index`` (last of ``rounds``) evaluates the test set: every
    ``--test-every`` rounds, and always on the run's last round (``--rounds``, or the round
    after which ``--patience`` stops the loop)."""
    last = round_index >= settings.rounds or bool(settings.patience and _stale_rounds(rounds) >= settings.patience)
    return last or bool(settings.test_every and round_index % settings.test_every == 0)


def _evaluation_estimate(task: Task, settings: S3Settings, validation: list[dict], test_path: Path | None) -> str:
    """What evaluation costs, said before any round: rows predicted per round and at the end,
    and the generation length bound."""
    test_rows = sum(1 for _ in read_records(test_path)) if test_path is not None else 0
    length = (f"{settings.train['max_target_length']} tokens" if settings.train.get("max_target_length")
              else "the length fitted to the training answers")
    when = ("on the last round only (--test-every N to see it every N rounds)" if not settings.test_every
            else f"every {settings.test_every} round(s) and on the last")
    return (f"evaluation: each round predicts the {len(validation)} validation rows; the {test_rows} test rows are "
            f"predicted {when}; each generated up to {length} (--max-target-length). "
            f"In all: at most {len(validation) * (settings.rounds + 1) + test_rows * _test_rounds(settings)} predictions")


def _test_rounds(settings: S3Settings) -> int:
    if not settings.test_every:
        return 1
    return len({r for r in range(settings.rounds + 1) if r % settings.test_every == 0} | {settings.rounds})


def _seed_per_label(task: Task, knowledge, generate: GenerateSettings) -> int:
    """Rows asked per label in label-conditioned seed synthesis: ``--num-questions`` shared
    by the labels."""
    total = generate.num_questions or task.default_num_questions
    return max(1, math.ceil(total / len(task.seed_contexts(knowledge))))


def _symgen(task: Task, generate: GenerateSettings, generator, loop, work: Path, questions: Path | None,
            num_questions: int | None) -> tuple[list[dict], dict, dict]:
    """SymGen generation (questions generated, or ``questions`` answered) in ``work``; the kept
    rows, the stage counts and the run's card metadata."""
    from ..pipeline.run import run

    from ..errors import NothingKept

    settings = dataclasses.replace(generate, questions=str(questions) if questions else None,
                                   num_questions=num_questions, work_dir=str(work / "symgen"), output=None)
    try:
        result = run(settings, task=task, generator=generator, loop=loop)
    except NothingKept as nothing:
        if questions is None:
            raise  # the seed round must produce rows
        return [], {**nothing.counts, "questions_kept": 0}, {}
    return result.rows.to_dataset().to_list(), dict(result.counts), result.metadata


def _errors_of(task: Task, evaluation: Path, verifier, limit: int | None) -> list[dict]:
    """The validation errors of the previous round's model, from its ``predictions.jsonl``."""
    references, predictions, judged = [], [], []
    fields = (*task.demonstration_fields, *task.reference_fields)
    for _, record in read_records(evaluation / "predictions.jsonl"):
        references.append({name: record[name] for name in fields})
        predictions.append(record.get("prediction"))
        judged.append({"correct": bool(record.get("correct"))})
    return collect_errors(task, references, predictions, judged, verifier, limit)


def _leak_check(task: Task, rows: list[dict], validation_index: InputIndex) -> dict[str, int]:
    """How many training rows have a validation row's input, exactly or after normalisation
    (they are removed before training; the counts go into the card)."""
    found = {"exact": 0, "normalised": 0}
    for row in rows:
        match = validation_index.match(row)
        if match:
            found[match] += 1
    return {**found, "removed": found["exact"] + found["normalised"], "validation_rows": len(validation_index.exact)}


def _train(task: Task, settings: S3Settings, dataset: Path, model: Path) -> None:
    """The round's training (:func:`~symgen_datasets.training.train`, in this process)."""
    from ..training import train

    train(settings.training_config(str(dataset), str(model)))


def _round_meta(task: Task, settings: S3Settings, generate: GenerateSettings, generator, synthesis_meta: dict,
                record: dict, history: list[dict], demonstrations: list[dict]) -> dict[str, Any]:
    """The ``symgen`` block of a round's card: the task and generation as ``symgen generate``
    records them, and the ``s3`` block."""
    from ..publish.card import s3_dataset_block

    demos = json.dumps(demonstrations, sort_keys=True, ensure_ascii=False)
    options = {k: (Path(v).name if isinstance(v, str) and "/" in v else v)
               for k, v in task.options_with_defaults(generate.task_options).items()}
    return {
        "tool_version": __version__,
        "task": task.name,
        "task_options": options,
        "generator": synthesis_meta.get("generator") or {"spec": generator.spec, "model": generator.model,
                                                         "revision": generator.model_revision},
        "settings": {"num_questions": generate.num_questions, "num_samples": generate.num_samples,
                     "min_votes": generate.min_votes, "temperature": generate.temperature, "seed": generate.seed,
                     "questions_file": None},
        "verifier": synthesis_meta.get("verifier"),
        "demonstrations": {"count": len(demonstrations), "sha256": hashlib.sha256(demos.encode()).hexdigest()[:12]},
        "prompt_templates": {**task.template_hashes(), **({task.extrapolation_template: template_hash(
            task.extrapolation_template, package=task.template_package)} if task.extrapolation_template else {})},
        "counts": {"questions_kept": record["rows"]},
        "dataset": s3_dataset_block(task),
        "version": None,
        "parent_version": None,
        "changes": [],
        "s3": {
            **{k: v for k, v in record.items() if k not in ("dataset", "validation_dir", "pushed")},
            "rounds": settings.rounds,
            # a local base model is named by its folder: the machine's path means nothing on the Hub
            "model": Path(settings.model).name if Path(settings.model).exists() else settings.model,
            "train": dict(settings.train),
            "errors_per_prompt": settings.errors_per_prompt,
            "examples_per_error": settings.examples_per_error,
            "validation": {"file": Path(settings.validation).name, "sha256": file_sha256(settings.validation)},
            "history": [{k: h.get(k) for k in ("round", "version", "rows", "examples_added", "errors_extrapolated",
                                               "validation_after", "test_after")} for h in [*history, record]],
        },
    }


def _write_round_dataset(folder: Path, rows: list[dict], meta: dict, history: list[dict]) -> Path:
    """The round's dataset folder: the rows (parquet), the card and the accuracy plot, written
    whole (a new folder replaces the old one only when complete)."""
    import datasets

    from ..publish import quiet_datasets, render_card, write_dataset_folder

    with quiet_datasets():
        written = write_dataset_folder(folder, {"default": datasets.Dataset.from_list(rows)},
                                       lambda configs: render_card(meta, configs, repo_id=str(folder)), overwrite=True)
    plot_accuracy(history, meta["s3"].get("metric") or "accuracy", written / PLOT_FILE)
    return written


def _update_round_card(folder: Path, meta: dict, history: list[dict]) -> None:
    """Re-render the card and the plot of a round's dataset folder (its rows unchanged), each
    file replaced atomically."""
    from ..publish import read_folder_card, render_card

    _, configs = read_folder_card(folder)
    card = folder / "README.md"
    partial = card.with_name(f".{card.name}.partial-{os.getpid()}")
    partial.write_text(render_card(meta, configs, repo_id=str(folder)), encoding="utf-8")
    os.replace(partial, card)
    plot_accuracy(history, meta["s3"].get("metric") or "accuracy", folder / PLOT_FILE)


def plot_accuracy(history: list[dict], metric: str, path: Path) -> Path:
    """A PNG of the validation and test accuracy of each round's model (rounds not yet
    evaluated are left out)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [h for h in history if h.get("validation_after") is not None]
    figure, axes = plt.subplots(figsize=(5.5, 3.5), dpi=120)
    if done:
        rounds = [h["round"] for h in done]
        axes.plot(rounds, [h["validation_after"] for h in done], marker="o", label="validation")
        if any(h.get("test_after") is not None for h in done):
            axes.plot(rounds, [h.get("test_after") for h in done], marker="s", label="test (held out)")
        axes.set_xticks(rounds)
        axes.legend()
    axes.set_xlabel("S3 round (0 = seed synthesis)")
    axes.set_ylabel(metric.replace("_", " "))
    axes.set_title("Task model accuracy per S3 round")
    axes.grid(alpha=0.3)
    figure.tight_layout()
    partial = path.with_name(f".{path.name}.partial.png")
    figure.savefig(partial)
    plt.close(figure)
    os.replace(partial, path)
    return path


def _push(folder: Path, settings: S3Settings, version: str) -> dict[str, str]:
    """Push the round's dataset as ``v<version>``; a tag that exists already with this round's
    card (a push that finished before an interruption) counts as pushed."""
    from huggingface_hub import HfApi

    from ..hub.push import card_at, hub_errors, push, version_tags, parse_version
    from ..publish import read_folder_card

    try:
        result = push(folder, settings.push_to_hub, version, private=settings.private,
                      commit_message=f"symgen s3: v{version}")
        return {"tag": result.tag, "commit": result.commit}
    except InputError:
        api = HfApi()
        with hub_errors(f"reading {settings.push_to_hub}"):
            tags = version_tags(api, settings.push_to_hub)
            tag, commit = tags.get(parse_version(version), (None, None))
            if tag is None:
                raise
            remote, _ = card_at(api, settings.push_to_hub, tag)
        local, _ = read_folder_card(folder)
        if (remote.get("s3") or {}).get("round") != local["s3"]["round"] or \
                (remote.get("s3") or {}).get("rows") != local["s3"]["rows"]:
            raise
        return {"tag": tag, "commit": commit}
