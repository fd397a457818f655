"""``symgen generate``: demonstrations in, a verified dataset folder out."""

from __future__ import annotations

import hashlib
import json
import math
import random
import shutil
from collections import Counter
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import datasets
from tqdm.auto import tqdm

from .. import prompts
from ..arrow_files import ArrowTable, stream_batches, write_arrow
from ..errors import GenerationError, InputError
from ..generators import REQUEST_TIMEOUT_S, EventLoopThread, Generator, RetryPolicy, from_spec
from ..generators.cache import CachedGenerator, ResponseCache
from ..hub.card import render_card
from ..hub.folder import check_output, write_dataset_folder
from ..io import MAX_INPUT_CHARS, validate_record
from ..tasks import DatabaseDirectory, TextToSQLTask, get_task
from ..verifiers import SQLiteExecutor
from .distributed import current_node
from .lock import RunLock
from .stages import StageContext, answer_stream, generate_questions, select, verify_stream

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
        max_retries: attempts per LLM request on 429/5xx/connection errors and timeouts.
        request_timeout_s: time limit of one attempt of an LLM request in seconds.
        work_dir: the run's work folder (response cache); default ``.<output>.work``.
        max_requests: stop cleanly after this many LLM requests (resumable; needs ``cache``).
        cache: store every response so that a re-run resumes (default on).
        max_input_chars: the longest question or program accepted in the input files.
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
    request_timeout_s: float = REQUEST_TIMEOUT_S
    work_dir: str | None = None
    max_requests: int | None = None
    cache: bool = True
    max_input_chars: int = MAX_INPUT_CHARS

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
        if self.max_retries < 1:
            raise InputError(f"--max-retries {self.max_retries}: must be at least 1 (the number of attempts per request)")
        if self.request_timeout_s <= 0:
            raise InputError(f"--request-timeout {self.request_timeout_s}: must be > 0")
        if self.max_input_chars < 1:
            raise InputError(f"--max-input-chars {self.max_input_chars}: must be at least 1")
        if self.max_requests is not None:
            if self.max_requests < 1:
                raise InputError(f"--max-requests {self.max_requests}: must be at least 1")
            if not self.cache:
                raise InputError(
                    "--max-requests needs the response cache: a run stopped at the budget resumes from it; "
                    "drop --no-cache (or --max-requests)"
                )


@dataclass
class GenerateResult:
    """What a run produced.

    Attributes:
        rows: the kept rows (:data:`ROW_FEATURES`) in the work folder's ``arrow/rows.arrow``:
            iterate, ``len()``, or ``.to_dataset()`` for a :class:`datasets.Dataset`.
        candidates: every question with all its candidates and their execution outcomes
            (:data:`CANDIDATE_FEATURES`), likewise.
        counts: questions and candidates per stage.
        vote_histogram: ``(votes, questions)`` pairs, by votes.
        output: the folder written, if any.
    """

    rows: ArrowTable
    candidates: ArrowTable
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
    questions file given with ``--questions`` (checked, read again by :meth:`provided`) or the
    number of questions to generate.

    Attributes:
        db_ids: the databases the run uses (those the questions name, or all of them).
        longest_question: for ``--questions``, the longest question on each database (for the
            check that every prompt fits the model).
    """

    task: TextToSQLTask
    databases: DatabaseDirectory
    demonstrations: list[dict]
    questions_file: str | None
    num_provided: int
    num_questions: int | None
    max_input_chars: int = MAX_INPUT_CHARS
    db_ids: list[str] = field(default_factory=list)
    longest_question: dict[str, str] = field(default_factory=dict)

    def provided(self) -> Iterator[dict]:
        """The ``--questions`` rows (``question``, ``db_id``), read one at a time."""
        return self.task.iter_questions(self.questions_file, self.databases, self.max_input_chars)


def load_inputs(settings: GenerateSettings, snapshot_dir: Path | None = None) -> RunInputs:
    """Check the settings and read every input, before anything is sent to an LLM.

    Args:
        settings: the run's settings.
        snapshot_dir: where the databases' snapshots go (see
            :class:`~symgen_datasets.tasks.DatabaseDirectory`); a temporary folder when ``None``.

    Raises:
        InputError: an option out of range, or a bad file (named with its line), an overlong
            field, an unknown ``db_id`` or a missing, unreadable or empty database.
        BusyError: a database stayed locked by a writer.
    """
    settings.check()
    task = get_task(settings.task)
    databases = task.databases(settings.db_dir, snapshot_dir)
    demonstrations = task.load_demonstrations(settings.demos, settings.max_input_chars)
    num_provided = 0
    longest: dict[str, str] = {}
    if settings.questions:
        for question in task.iter_questions(settings.questions, databases, settings.max_input_chars):  # checks every row
            num_provided += 1
            if question["db_id"] not in longest or len(question["question"]) > len(longest[question["db_id"]]):
                longest[question["db_id"]] = question["question"]
        if not num_provided:
            raise InputError(f"{settings.questions}: no questions; expected JSON lines with question and db_id")
        db_ids = sorted(longest)
    else:
        db_ids = list(databases.db_ids)
        for db_id in db_ids:  # every database is used: a broken file fails before the LLM runs
            databases.check(db_id)
    num_questions = None if settings.questions else (settings.num_questions or task.default_num_questions)
    return RunInputs(task, databases, demonstrations, settings.questions, num_provided, num_questions,
                     settings.max_input_chars, db_ids, longest)


def check_prompts_fit(inputs: RunInputs, generator: Generator) -> None:
    """Before any generation request: make sure that every prompt of the run can fit the model's
    context (when the backend says how long it is), by building, for each database the run uses,
    its question-generation prompt and its answer-generation prompt for the longest question
    (the longest demonstration question when questions are generated).

    Raises:
        InputError: a prompt cannot fit even with one demonstration and no example rows (the
            message names the database and the question).
    """
    task, databases, demonstrations = inputs.task, inputs.databases, inputs.demonstrations
    question_limit = generator.max_prompt_tokens(task.sampling.question_max_new_tokens)
    answer_limit = generator.max_prompt_tokens(task.sampling.answer_max_new_tokens)
    if question_limit is None and answer_limit is None:
        return
    longest_demo = max((d["question"] for d in demonstrations), key=len)
    for db_id in inputs.db_ids:
        database = databases.get(db_id)
        if not inputs.questions_file:
            task.question_prompt(database, demonstrations, random.Random(0), generator.count_tokens, question_limit)
        question = inputs.longest_question.get(db_id, longest_demo)
        task.answer_prompt(database, question, demonstrations, generator.count_tokens, answer_limit)


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


def generate(settings: GenerateSettings, write: bool = True) -> GenerateResult | None:
    """Run the SymGen pipeline: question generation (unless ``settings.questions``), answer
    generation, verification, selection; then write the dataset folder.

    Inputs are all checked before the first LLM request; the output folder is written only when
    the run succeeds (all or nothing). Intermediate Arrow files (questions, answers, verified
    questions) go to ``<work folder>/arrow``, so no stage holds the candidates in memory.

    Launched as several processes (``accelerate launch`` or ``torchrun``; see
    :mod:`symgen_datasets.pipeline.distributed`), each process answers and verifies its shard of
    the questions and the main process merges them and writes the same dataset as one process.

    Returns:
        A :class:`GenerateResult` (``None`` in the processes other than the main one).

    Raises:
        InputError: bad input (file and line named) or option.
        GenerationError: the LLM backend failed for good or cannot be reached, or no question
            was kept (an empty split cannot be loaded with ``load_dataset``).
    """
    node = current_node()
    snapshots = settings.work_folder() / "databases"
    inputs = load_inputs(settings, snapshots)
    output = settings.output_folder()
    if write and node.is_main:
        check_output(output, settings.overwrite)
    # one run per work folder; the other processes of a multi-process run share the main one's
    with RunLock(settings.work_folder()) if node.is_main else nullcontext():
        try:
            if node.is_main:  # one consistent snapshot per database for the whole run, made before any request
                shutil.rmtree(snapshots, ignore_errors=True)
                for db_id in inputs.db_ids:
                    inputs.databases.path(db_id)
            return _generate(settings, inputs, node, output, write)
        finally:
            if node.is_main:
                shutil.rmtree(snapshots, ignore_errors=True)


def _generate(settings: GenerateSettings, inputs: RunInputs, node, output: Path, write: bool) -> GenerateResult | None:
    """:func:`generate` once its inputs are checked, its work folder locked and its databases
    snapshotted."""
    task, databases, demonstrations = inputs.task, inputs.databases, inputs.demonstrations
    retry = RetryPolicy(max_attempts=settings.max_retries)
    generator: Generator = from_spec(settings.generator, concurrency=settings.concurrency, retry=retry,
                                     request_timeout_s=settings.request_timeout_s)
    if settings.cache:
        cache = ResponseCache(settings.work_folder() / "responses.sqlite")
        generator = CachedGenerator(generator, cache, settings.max_requests)
    arrow_folder = settings.work_folder() / "arrow"
    shard_folder = arrow_folder if node.world_size == 1 else arrow_folder / f"rank-{node.rank}-of-{node.world_size}"
    loop = EventLoopThread()
    try:
        loop.run(generator.connect())
        if node.is_main:
            check_prompts_fit(inputs, generator)
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
            if node.is_main:
                arrow_folder.mkdir(parents=True, exist_ok=True)
                questions = _write_questions(context, inputs, arrow_folder / "questions.arrow")
                context.count("questions", len(questions))
            node.wait_for_everyone()
            if node.world_size > 1:  # every process takes its contiguous shard of the questions
                from datasets.distributed import split_dataset_by_node

                whole = datasets.Dataset.from_file(str(arrow_folder / "questions.arrow"))
                questions = split_dataset_by_node(whole, rank=node.rank, world_size=node.world_size)
            shard_folder.mkdir(parents=True, exist_ok=True)
            verified = _run_answer_stages(context, questions, settings, shard_folder)
    finally:
        loop.run(generator.aclose())
        loop.close()
        if isinstance(generator, CachedGenerator):
            generator.cache.close()

    shards = node.gather({
        "counts": context.counts,
        "retries": generator.retries,
        "hits": getattr(generator, "hits", 0),
        "verified": verified,
    })
    node.leave()
    if not node.is_main:
        return None
    # the shards in rank order are the questions in order
    verified = ArrowTable.concatenate([shard["verified"] for shard in shards])
    if node.world_size > 1:
        context.counts = dict(sum((Counter(shard["counts"]) for shard in shards), Counter()))
    retries = sum(shard["retries"] for shard in shards)
    hits = sum(shard["hits"] for shard in shards)

    votes: Counter = Counter()
    kept_rows = _kept_rows(verified, settings.min_votes, generator.provenance, task, votes)
    rows = write_arrow(arrow_folder / "rows.arrow", ROW_FEATURES, kept_rows)
    context.count("questions_kept", len(rows))
    counts = _ordered_counts(context.counts)
    if len(rows) == 0:
        raise GenerationError(
            f"no question reached --min-votes {settings.min_votes} "
            f"({', '.join(f'{name} {value}' for name, value in counts.items())}); nothing was written. "
            "Lower --min-votes, raise --num-samples, or use a stronger --generator"
        )
    histogram = sorted(votes.items())
    result = GenerateResult(
        rows=rows,
        candidates=verified.select_columns(CANDIDATE_COLUMNS),
        counts=counts,
        vote_histogram=histogram,
        settings=settings,
        generator_spec=generator.spec,
        generator_model=generator.model,
        generator_provenance=generator.provenance,
        generator_revision=generator.model_revision,
        retries=retries,
        cached=hits,
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


#: The stage files in ``<work folder>/arrow``: each stage adds columns to the one before.
QUESTION_FEATURES = datasets.Features(
    {
        "question": datasets.Value("string"),
        "db_id": datasets.Value("string"),
        "question_source": datasets.Value("string"),
        "question_index": datasets.Value("int64"),
    }
)
ANSWER_FEATURES = datasets.Features(
    {
        **QUESTION_FEATURES,
        "candidates": datasets.List(datasets.Value("string")),
        "candidate_logprobs": datasets.List(datasets.Value("float64")),
    }
)
VERIFIED_FEATURES = datasets.Features(
    {
        **ANSWER_FEATURES,
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
#: The published ``candidates`` config: every question with all its candidates and the vote.
CANDIDATE_FEATURES = datasets.Features({name: VERIFIED_FEATURES[name] for name in VERIFIED_FEATURES if name != "question_index"})


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

    inputs = load_inputs(settings)  # snapshots in a temporary folder: a dry run writes nothing
    task, databases, demonstrations = inputs.task, inputs.databases, inputs.demonstrations
    generator = from_spec(settings.generator, concurrency=settings.concurrency)
    count = generator.count_tokens
    question_limit = generator.max_prompt_tokens(task.sampling.question_max_new_tokens)
    answer_limit = generator.max_prompt_tokens(task.sampling.answer_max_new_tokens)
    k = settings.num_samples
    if inputs.questions_file:
        answer_tokens = sum(
            count(task.answer_prompt(databases.get(q["db_id"]), q["question"], demonstrations, count, answer_limit))
            for q in inputs.provided()
        )
        n = inputs.num_provided
        return DryRunEstimate((0, 0), n, n * k, answer_tokens * k, n * k * task.sampling.answer_max_new_tokens)
    n = inputs.num_questions
    first = math.ceil(n * 1.25 / QUESTIONS_PER_PROMPT)
    most = MAX_QUESTION_REQUESTS_PER_QUESTION * n
    rng = random.Random(settings.seed)
    per_db_question = {
        db_id: count(task.question_prompt(databases.get(db_id), demonstrations, rng, count, question_limit))
        for db_id in databases.db_ids
    }
    per_db_answer = {
        db_id: count(task.answer_prompt(databases.get(db_id), demonstrations[0]["question"], demonstrations, count, answer_limit))
        for db_id in databases.db_ids
    }
    mean_question = sum(per_db_question.values()) / len(per_db_question)
    mean_answer = sum(per_db_answer.values()) / len(per_db_answer)
    completions = first * QUESTIONS_PER_PROMPT + n * k
    prompt_tokens = int(first * QUESTIONS_PER_PROMPT * mean_question + n * k * mean_answer)
    generated = first * QUESTIONS_PER_PROMPT * task.sampling.question_max_new_tokens + n * k * task.sampling.answer_max_new_tokens
    return DryRunEstimate((first, most), n, completions, prompt_tokens, generated)


def _answer_window(generator: Generator, num_samples: int) -> int:
    """Questions in flight at once in :func:`answer_stream`: enough requests for four rounds of
    the backend's concurrency, so one is always waiting when another finishes; one at a time for
    in-process backends."""
    return max(1, math.ceil(4 * generator.concurrency / num_samples)) + 1 if generator.concurrency > 1 else 1


def _rows(dataset: datasets.Dataset | ArrowTable) -> Iterator[dict]:
    """The rows of ``dataset``, read as a stream (:func:`stream_batches`)."""
    for batch in stream_batches(dataset):
        yield from batch.to_pylist()


def _run_answer_stages(context: StageContext, questions: ArrowTable | datasets.Dataset, settings: GenerateSettings,
                       arrow_folder: Path) -> ArrowTable:
    """Answer generation streamed to ``answers.arrow``, then verification streamed to
    ``verified.arrow`` (both in ``arrow_folder``), each file read back batch by batch: memory
    holds a window of questions, whatever their number.

    ``questions`` has ``question``, ``db_id``, ``question_source`` and ``question_index`` (the
    question's number in the whole run, which seeds its candidates).

    Returns:
        The verified questions (:data:`VERIFIED_FEATURES`) in ``verified.arrow``.
    """
    window = _answer_window(context.generator, settings.num_samples)
    stream = answer_stream(context, _rows(questions), window)
    progress = tqdm(stream, total=len(questions), desc="answer generation", unit="question")
    answers = write_arrow(arrow_folder / "answers.arrow", ANSWER_FEATURES, progress)
    progress = tqdm(verify_stream(context, answers), total=len(answers), desc="verification", unit="question")
    return write_arrow(arrow_folder / "verified.arrow", VERIFIED_FEATURES, progress)


def _write_questions(context: StageContext, inputs: RunInputs, path: Path) -> ArrowTable:
    """Write the run's questions, numbered (``question_index``), to the Arrow file ``path``: the
    ``--questions`` rows, or new ones from question generation."""
    if inputs.questions_file:
        rows = (dict(q, question_source="provided") for q in inputs.provided())
        context.count("questions_provided", inputs.num_provided)
    else:
        context.count("questions_asked", inputs.num_questions)
        rows = generate_questions(context, inputs.num_questions)
    return write_arrow(path, QUESTION_FEATURES, ({**row, "question_index": index} for index, row in enumerate(rows)))


def _kept_rows(dataset: ArrowTable, min_votes: int, generator: str, task: TextToSQLTask,
               votes: Counter) -> Iterator[dict]:
    """Selection as a stream: the kept rows (:data:`ROW_COLUMNS`, each checked against the
    task's row schema) of the verified questions, read batch by batch; ``votes`` counts the
    questions per number of votes (the card's histogram)."""
    index = 0
    for batch in stream_batches(dataset):
        columns = batch.to_pydict()
        votes.update(columns["votes"])
        for position, keep in enumerate(select(columns, min_votes)):
            if keep:
                row = {name: generator if name == "generator" else columns[name][position] for name in ROW_COLUMNS}
                validate_record(row, task.row_schema, f"kept row {index}")
                index += 1
                yield row


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
