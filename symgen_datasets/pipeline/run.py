"""``symgen generate``: demonstrations in, a verified dataset folder out."""

from __future__ import annotations

import hashlib
import json
import math
import random
from collections import Counter
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import datasets
from .. import prompts
from ..errors import GenerationError, InputError
from ..generators import EventLoopThread, Generator, RetryPolicy, from_spec
from ..generators.cache import CachedGenerator, ResponseCache
from ..hub.card import render_card
from ..hub.folder import check_output, write_dataset_folder
from ..io import validate_record
from ..tasks import DatabaseDirectory, TextToSQLTask, get_task
from ..verifiers import SQLiteExecutor
from .stages import StageContext, generate_answers, generate_questions, select, verify

#: Columns of a kept row, in order (Spider's names first, then provenance).
ROW_COLUMNS = [
    "question", "query", "db_id", "votes", "num_candidates", "num_executable",
    "num_distinct_results", "logprob", "generator", "question_source",
]
ROW_FEATURES = datasets.Features(
    {
        "question": datasets.Value("string"),
        "query": datasets.Value("string"),
        "db_id": datasets.Value("string"),
        "votes": datasets.Value("int32"),
        "num_candidates": datasets.Value("int32"),
        "num_executable": datasets.Value("int32"),
        "num_distinct_results": datasets.Value("int32"),
        "logprob": datasets.Value("float64"),
        "generator": datasets.Value("string"),
        "question_source": datasets.Value("string"),
    }
)
CANDIDATE_COLUMNS = [
    "question", "db_id", "question_source", "candidates", "candidate_logprobs",
    "candidate_status", "candidate_result", "query", "votes",
]


@dataclass
class GenerateSettings:
    """The settings of one ``symgen generate`` run (the CLI options, same names).

    Attributes:
        task: registered task name (``spider``, ``geoquery_sql``).
        demos: JSONL demonstrations; ``None`` for the task's packaged 10-shot demos.
        db_dir: folder of ``<db_id>/<db_id>.sqlite``; ``None`` for the packaged databases.
        questions: JSONL/JSON questions to answer (skips question generation).
        num_questions: questions to generate (default: the task's default); ignored with
            ``questions``.
        num_samples: candidates per question (K, default 20 as in SymGen).
        min_votes: votes needed to keep a question (V, default 5).
        temperature: sampling temperature for questions and candidates.
        seed: the run seed; every request's seed derives from it.
        concurrency: LLM requests in flight at most.
        generator: backend spec (see :func:`symgen_datasets.generators.from_spec`).
        timeout_s: per-query execution time limit in seconds.
        output: the dataset folder to write (default ``./<task>-synth``).
        overwrite: replace an existing non-empty output folder.
        max_retries: attempts per LLM request on 429/5xx/connection errors.
        work_dir: the run's work folder (response cache); default ``.<output>.work``.
        max_requests: stop cleanly after this many LLM requests (resumable).
        cache: store every response so that a re-run resumes (default on).
    """

    task: str
    demos: str | None = None
    db_dir: str | None = None
    questions: str | None = None
    num_questions: int | None = None
    num_samples: int = 20
    min_votes: int = 5
    temperature: float = 0.8
    seed: int = 0
    concurrency: int = 16
    generator: str = "embedded"
    timeout_s: float = 5.0
    output: str | None = None
    overwrite: bool = False
    max_retries: int = 6
    work_dir: str | None = None
    max_requests: int | None = None
    cache: bool = True

    def output_folder(self) -> Path:
        """The dataset folder: ``output``, else ``./<task>-synth``."""
        return Path(self.output or f"./{self.task}-synth")

    def work_folder(self) -> Path:
        """Where the response cache lives: ``work_dir``, else ``.<output name>.work`` beside the
        output folder (so the same command finds it again)."""
        if self.work_dir:
            return Path(self.work_dir)
        output = self.output_folder()
        return output.parent / f".{output.name}.work"

    def check(self) -> None:
        """Raise :class:`InputError` naming the option when a value is out of range."""
        if self.num_samples < 1:
            raise InputError(f"--num-samples {self.num_samples}: must be at least 1")
        if not 1 <= self.min_votes <= self.num_samples:
            raise InputError(f"--min-votes {self.min_votes}: must be between 1 and --num-samples ({self.num_samples})")
        if self.num_questions is not None and self.num_questions < 1:
            raise InputError(f"--num-questions {self.num_questions}: must be at least 1")
        if self.temperature < 0:
            raise InputError(f"--temperature {self.temperature}: must be >= 0")
        if self.concurrency < 1:
            raise InputError(f"--concurrency {self.concurrency}: must be at least 1")
        if self.timeout_s <= 0:
            raise InputError(f"--timeout {self.timeout_s}: must be > 0")


@dataclass
class GenerateResult:
    """What a run produced.

    Attributes:
        rows: the kept rows (:data:`ROW_FEATURES`).
        candidates: every question with all its candidates and their execution outcomes.
        counts: questions and candidates per stage.
        vote_histogram: ``(votes, questions)`` pairs, by votes.
        output: the folder written, if any.
    """

    rows: datasets.Dataset
    candidates: datasets.Dataset
    counts: dict[str, int]
    vote_histogram: list[tuple[int, int]]
    settings: GenerateSettings
    generator_spec: str
    generator_model: str
    generator_provenance: str
    generator_revision: str = ""
    retries: int = 0
    cached: int = 0
    output: Path | None = None
    metadata: dict = field(default_factory=dict, repr=False)
    card: str = field(default="", repr=False)


def _sha256_lines(rows: list[dict]) -> str:
    text = "\n".join(json.dumps(r, sort_keys=True, ensure_ascii=False) for r in rows)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


@dataclass
class RunInputs:
    """A run's checked inputs: the task, its databases and demonstrations, and either the
    questions given with ``--questions`` or the number of questions to generate."""

    task: TextToSQLTask
    databases: DatabaseDirectory
    demonstrations: list[dict]
    provided: list[dict] | None
    num_questions: int | None


def load_inputs(settings: GenerateSettings) -> RunInputs:
    """Check the settings and read every input, before anything is sent to an LLM.

    Raises:
        InputError: an option out of range, or a bad file (named with its line), an unknown
            ``db_id`` or a missing database.
    """
    settings.check()
    task = get_task(settings.task)
    databases = task.databases(settings.db_dir)
    demonstrations = task.load_demonstrations(settings.demos)
    provided = task.load_questions(settings.questions, databases) if settings.questions else None
    num_questions = None if provided is not None else (settings.num_questions or task.default_num_questions)
    return RunInputs(task, databases, demonstrations, provided, num_questions)


def run_metadata(result: "GenerateResult", inputs: RunInputs) -> dict:
    """The ``symgen`` block of the dataset card: everything needed to understand and re-check the
    run (see :mod:`symgen_datasets.hub.card`)."""
    from .. import __version__

    task, demonstrations = inputs.task, inputs.demonstrations
    settings = result.settings
    return {
        "tool_version": __version__,
        "task": task.name,
        "generator": {"spec": result.generator_spec, "model": result.generator_model, "revision": result.generator_revision},
        "settings": {
            "num_questions": inputs.num_questions,
            "questions_file": Path(settings.questions).name if settings.questions else None,
            "num_samples": settings.num_samples,
            "min_votes": settings.min_votes,
            "temperature": settings.temperature,
            "seed": settings.seed,
            "timeout_s": settings.timeout_s,
        },
        "demonstrations": {"count": len(demonstrations), "sha256": _sha256_lines(demonstrations)},
        "prompt_templates": {name: prompts.template_hash(name) for name in (task.question_template, task.answer_template)},
        "counts": dict(result.counts),
        "vote_histogram": {int(votes): int(n) for votes, n in result.vote_histogram},
        "version": None,
        "parent_version": None,
        "changes": [],
    }


@contextmanager
def _quiet_datasets():
    """Hide ``datasets``' own progress bars for quick internal steps (casts, parquet writes)."""
    enabled = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if enabled:
            datasets.enable_progress_bars()


def _answer_batch_size(generator: Generator, num_samples: int) -> int:
    """Questions per answer-generation batch: enough requests to keep the backend's concurrency
    busy for 16 rounds (the batch boundary idles the server for part of one round), and one
    question at a time for in-process backends, so progress shows."""
    return max(1, math.ceil(16 * generator.concurrency / num_samples)) if generator.concurrency > 1 else 1


def generate(settings: GenerateSettings, write: bool = True) -> GenerateResult:
    """Run the SymGen pipeline: question generation (unless ``settings.questions``), answer
    generation, verification, selection; then write the dataset folder.

    Inputs are all checked before the first LLM request; the output folder is written only when
    the run succeeds (all or nothing).

    Returns:
        A :class:`GenerateResult`.

    Raises:
        InputError: bad input (file and line named) or option.
        GenerationError: the LLM backend failed for good or cannot be reached, or no question
            was kept (an empty split cannot be loaded with ``load_dataset``).
    """
    inputs = load_inputs(settings)
    output = settings.output_folder()
    if write:
        check_output(output, settings.overwrite)
    task, databases, demonstrations, provided = inputs.task, inputs.databases, inputs.demonstrations, inputs.provided
    if provided is None:
        for db_id in databases.db_ids:  # open every database now: a broken file fails before the LLM runs
            databases.get(db_id)

    retry = RetryPolicy(max_attempts=settings.max_retries)
    generator: Generator = from_spec(settings.generator, concurrency=settings.concurrency, retry=retry)
    if settings.cache:
        cache = ResponseCache(settings.work_folder() / "responses.sqlite")
        generator = CachedGenerator(generator, cache, settings.max_requests)
    loop = EventLoopThread()
    try:
        loop.run(generator.check())
        with SQLiteExecutor(timeout_s=settings.timeout_s) as executor:
            context = StageContext(
                task=task,
                databases=databases,
                demonstrations=demonstrations,
                generator=generator,
                loop=loop,
                executor=executor,
                num_samples=settings.num_samples,
                temperature=settings.temperature,
                seed=settings.seed,
            )
            if provided is not None:
                questions = [dict(q, question_source="provided") for q in provided]
                context.count("questions_provided", len(questions))
            else:
                context.count("questions_asked", inputs.num_questions)
                questions = generate_questions(context, inputs.num_questions)
            context.count("questions", len(questions))
            dataset = _run_answer_stages(context, questions, settings)
    finally:
        loop.run(generator.aclose())
        loop.close()
        if isinstance(generator, CachedGenerator):
            generator.cache.close()

    with _quiet_datasets():
        kept = dataset.filter(select, batched=True, fn_kwargs={"min_votes": settings.min_votes})
        rows = kept.add_column("generator", [generator.provenance] * len(kept))
        rows = rows.select_columns(ROW_COLUMNS).cast(ROW_FEATURES)
    context.count("questions_kept", len(kept))
    counts = _ordered_counts(context.counts)
    if len(rows) == 0:
        raise GenerationError(
            f"no question reached --min-votes {settings.min_votes} "
            f"({', '.join(f'{name} {value}' for name, value in counts.items())}); nothing was written. "
            "Lower --min-votes, raise --num-samples, or use a stronger --generator"
        )
    for index, row in enumerate(rows):
        validate_record(row, task.row_schema, f"kept row {index}")
    histogram = sorted(Counter(dataset["votes"]).items())
    result = GenerateResult(
        rows=rows,
        candidates=dataset.select_columns(CANDIDATE_COLUMNS),
        counts=counts,
        vote_histogram=histogram,
        settings=settings,
        generator_spec=generator.spec,
        generator_model=generator.model,
        generator_provenance=generator.provenance,
        generator_revision=generator.model_revision,
        retries=generator.retries,
        cached=getattr(generator, "hits", 0),
    )
    result.metadata = run_metadata(result, inputs)
    if write:

        def card(configs: list[dict]) -> str:
            result.card = render_card(result.metadata, configs, repo_id=str(output))
            return result.card

        with _quiet_datasets():
            result.output = write_dataset_folder(
                output, {"default": result.rows, "candidates": result.candidates}, card, settings.overwrite
            )
    return result


CANDIDATE_FEATURES = datasets.Features(
    {
        "question": datasets.Value("string"),
        "db_id": datasets.Value("string"),
        "question_source": datasets.Value("string"),
        "candidates": datasets.List(datasets.Value("string")),
        "candidate_logprobs": datasets.List(datasets.Value("float64")),
        "candidate_status": datasets.List(datasets.Value("string")),
        "candidate_result": datasets.List(datasets.Value("string")),
        "query": datasets.Value("string"),
        "votes": datasets.Value("int64"),
        "num_candidates": datasets.Value("int64"),
        "num_executable": datasets.Value("int64"),
        "num_distinct_results": datasets.Value("int64"),
        "logprob": datasets.Value("float64"),
    }
)


@dataclass
class DryRunEstimate:
    """What a run would send, computed before anything is sent.

    Attributes:
        question_requests: (first round, at most) question-generation prompts; (0, 0) with
            ``--questions``.
        answer_requests: answer-generation prompts (one per question).
        completions: completions asked in the first round (every prompt times its samples).
        prompt_tokens: tokens sent, estimated (every completion resends its prompt).
        max_generated_tokens: generated tokens at most.
    """

    question_requests: tuple[int, int]
    answer_requests: int
    completions: int
    prompt_tokens: int
    max_generated_tokens: int

    def __str__(self) -> str:
        first, most = self.question_requests
        questions = f"{first} to {most}" if most else "0 (questions are given)"
        return (
            f"question-generation prompts: {questions}\n"
            f"answer-generation prompts:   {self.answer_requests}\n"
            f"completions (first round):   {self.completions}\n"
            f"prompt tokens (estimated):   {self.prompt_tokens}\n"
            f"generated tokens (at most):  {self.max_generated_tokens}"
        )


def dry_run(settings: GenerateSettings) -> DryRunEstimate:
    """Count the requests and estimate the tokens of a run without sending anything.

    The inputs are checked as in :func:`generate`. Prompts are rendered for real with the
    backend's token counter (an estimate of 1 token per 3.5 characters for remote backends);
    for generated questions, each answer prompt is estimated from a demonstration's question.

    Raises:
        InputError: as :func:`generate`.
    """
    from .stages import MAX_QUESTION_REQUESTS_PER_QUESTION, QUESTIONS_PER_PROMPT

    inputs = load_inputs(settings)
    task, databases, demonstrations = inputs.task, inputs.databases, inputs.demonstrations
    generator = from_spec(settings.generator, concurrency=settings.concurrency)
    count = generator.count_tokens
    k = settings.num_samples
    if inputs.provided is not None:
        questions = inputs.provided
        answer_tokens = sum(
            count(task.answer_prompt(databases.get(q["db_id"]), q["question"], demonstrations, count)) for q in questions
        )
        return DryRunEstimate((0, 0), len(questions), len(questions) * k, answer_tokens * k,
                              len(questions) * k * task.sampling.answer_max_new_tokens)
    n = inputs.num_questions
    first = math.ceil(n * 1.25 / QUESTIONS_PER_PROMPT)
    most = MAX_QUESTION_REQUESTS_PER_QUESTION * n
    rng = random.Random(settings.seed)
    per_db_question = {
        db_id: count(task.question_prompt(databases.get(db_id), demonstrations, rng, count)) for db_id in databases.db_ids
    }
    per_db_answer = {
        db_id: count(task.answer_prompt(databases.get(db_id), demonstrations[0]["question"], demonstrations, count))
        for db_id in databases.db_ids
    }
    mean_question = sum(per_db_question.values()) / len(per_db_question)
    mean_answer = sum(per_db_answer.values()) / len(per_db_answer)
    completions = first * QUESTIONS_PER_PROMPT + n * k
    prompt_tokens = int(first * QUESTIONS_PER_PROMPT * mean_question + n * k * mean_answer)
    generated = first * QUESTIONS_PER_PROMPT * task.sampling.question_max_new_tokens + n * k * task.sampling.answer_max_new_tokens
    return DryRunEstimate((first, most), n, completions, prompt_tokens, generated)


def _run_answer_stages(context: StageContext, questions: list[dict], settings: GenerateSettings) -> datasets.Dataset:
    """Answer generation then verification, as batched ``Dataset.map`` calls."""
    if not questions:  # map adds no column to an empty dataset: give the full schema directly
        return datasets.Dataset.from_dict({name: [] for name in CANDIDATE_FEATURES}, features=CANDIDATE_FEATURES)
    columns = ("question", "db_id", "question_source")
    dataset = datasets.Dataset.from_dict(
        {name: [q[name] for q in questions] for name in columns},
        features=datasets.Features({name: datasets.Value("string") for name in columns}),
    )
    fingerprint = hashlib.sha256(json.dumps(asdict(settings), sort_keys=True, default=str).encode()).hexdigest()[:16]
    dataset = dataset.map(
        generate_answers,
        batched=True,
        batch_size=_answer_batch_size(context.generator, settings.num_samples),
        with_indices=True,
        fn_kwargs={"context": context},
        desc="answer generation",
        new_fingerprint=f"answers-{fingerprint}",
    )
    return dataset.map(
        verify,
        batched=True,
        batch_size=32,
        fn_kwargs={"context": context},
        desc="verification",
        new_fingerprint=f"verify-{fingerprint}",
    )


_COUNT_ORDER = [
    "questions_asked", "question_requests", "questions_sampled", "questions_parsed", "questions_provided",
    "questions", "candidates_sampled", "candidates_parsed", "candidates_executable", "questions_kept",
]


def _ordered_counts(counts: dict[str, int]) -> dict[str, int]:
    return {name: counts[name] for name in _COUNT_ORDER if name in counts}


def format_summary(result: GenerateResult) -> str:
    """The end-of-run summary table (plain text)."""
    counts = result.counts
    questions = counts.get("questions", 0)
    kept = counts.get("questions_kept", 0)
    sampled = counts.get("candidates_sampled", 0)
    lines = [
        ("generator", result.generator_provenance),
        *[(name.replace("_", " "), str(value)) for name, value in counts.items()],
        ("kept / questions", f"{kept / questions:.1%}" if questions else "-"),
        ("executable / sampled", f"{counts.get('candidates_executable', 0) / sampled:.1%}" if sampled else "-"),
        ("retried requests", str(result.retries)),
        ("completions from the cache", str(result.cached)),
        ("output", str(result.output) if result.output else "(not written)"),
    ]
    width = max(len(name) for name, _ in lines)
    rule = "-" * (width + 2 + max(len(value) for _, value in lines))
    return "\n".join([rule, *[f"{name:<{width}}  {value}" for name, value in lines], rule])
