"""A generation run over objects the caller may pass in: demonstrations in, verified rows out.

:func:`run` checks the inputs, takes the work folder's lock and the task knowledge's snapshot,
then runs the stages (question generation unless questions are given, answer generation,
verification, selection), streaming each to an Arrow file in the work folder. It uses the task,
generator (with its event loop), verifier and process group (``node``) it is given and creates
the others; it closes only what it created, so a caller may run several rounds (S3) with one
generator and one ``accelerate launch`` process group. :func:`generate` is :func:`run` followed
by writing the dataset folder (:mod:`symgen_datasets.publish`).
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from collections import Counter
from contextlib import ExitStack, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from .. import __version__
from ..arrow_files import ArrowTable, stream_batches, write_arrow
from ..redaction import redact_url
from ..errors import GenerationError, InputError, NothingKept
from ..generators import EventLoopThread, Generator, RetryPolicy, from_spec
from ..generators.cache import CachedGenerator, ResponseCache
from ..io import MAX_INPUT_CHARS, validate_record
from ..publish import check_output, dataset_block, quiet_datasets, write_dataset_folder
from ..tasks import Task, TaskKnowledge, get_task
from ..verifiers import Verifier
from .columns import Columns
from .distributed import Node, current_node
from .lock import RunLock
from .settings import GenerateSettings
from .stages import StageContext, answer_stream, generate_questions, select, verify_stream, vote_stream


@dataclass
class GenerateResult:
    """What a run produced.

    Attributes:
        rows: the kept rows in the work folder's ``arrow/rows.arrow``: iterate, ``len()``, or
            ``.to_dataset()`` for a :class:`datasets.Dataset`.
        candidates: every question with all its candidates and their outcomes, likewise.
        counts: questions and candidates per stage.
        vote_histogram: ``(votes, questions)`` pairs, by votes.
        columns: the run's column names and features.
        metadata: the dataset card's ``symgen`` block.
        output: the folder written, if any.
    """

    rows: ArrowTable
    candidates: ArrowTable
    counts: dict[str, int]
    vote_histogram: list[tuple[int, int]]
    settings: GenerateSettings
    columns: Columns
    generator_spec: str
    generator_model: str
    generator_provenance: str
    generator_revision: str = ""
    retries: int = 0
    cached: int = 0
    #: whether the backend returned several samples per request (``n``); ``None``: not applicable
    generator_n_supported: bool | None = None
    #: the token bill: ``requests`` (generation requests answered), ``prompt_tokens`` and
    #: ``completion_tokens`` billed, ``cached_tokens`` (of the completions the response cache served)
    bill: dict[str, int] = field(default_factory=dict)
    output: Path | None = None
    metadata: dict = field(default_factory=dict, repr=False)
    card: str = field(default="", repr=False)


def _sha256_lines(rows: list[dict]) -> str:
    text = "\n".join(json.dumps(r, sort_keys=True, ensure_ascii=False) for r in rows)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


@dataclass
class RunInputs:
    """A run's checked inputs: the task, its knowledge and demonstrations, and either the
    questions file given with ``--questions`` (checked, read again by :meth:`provided`) or the
    number of questions to generate.

    Attributes:
        contexts: the question contexts the run uses (each distinct context of the given
            questions, or every context question generation goes round).
        longest_question: for ``--questions``, the longest question of each context (for the
            check that every prompt fits the model), keyed by :func:`context_key`.
    """

    task: Task
    knowledge: TaskKnowledge
    demonstrations: list[dict]
    questions_file: str | None
    num_provided: int
    num_questions: int | None
    max_input_chars: int = MAX_INPUT_CHARS
    contexts: list[dict] = field(default_factory=list)
    longest_question: dict[tuple, str] = field(default_factory=dict)

    def provided(self) -> Iterator[dict]:
        """The ``--questions`` rows (the task's question fields), read one at a time."""
        return self.task.iter_questions(self.questions_file, self.knowledge, self.max_input_chars)


def context_key(task: Task, row: dict) -> tuple:
    """A question's context (its context fields' values) as a hashable key; a field question
    generation fills in itself (Python's ``entry_point``) is ``None`` before it does."""
    return tuple(row.get(name) for name in task.context_fields)


def load_inputs(settings: GenerateSettings, task: Task | None = None, snapshot_dir: Path | None = None) -> RunInputs:
    """Check the settings and read every input, before anything is sent to an LLM.

    Args:
        settings: the run's settings.
        task: the task (default: ``settings.task`` from the registry).
        snapshot_dir: a folder the task's knowledge may write to (database snapshots); a
            temporary folder when ``None``.

    Raises:
        InputError: an option out of range, a bad file (named with its line), an overlong
            field, or a context the task's knowledge cannot serve (e.g. a missing database).
        BusyError: a database stayed locked by a writer.
    """
    settings.check()
    task = task or get_task(settings.task)
    if task.synthesis != "symgen" or task.verifier_class is None:
        raise InputError(f"task {task.name} has no verifier to vote with: its data comes from {task.synthesis} "
                         f"generation in `symgen s3 {task.name} --validation FILE ...`")
    knowledge = task.load_knowledge(task.options_with_defaults(settings.task_options), snapshot_dir)
    # a user's --demos are checked against the knowledge as --questions are (the packaged ones
    # may name databases a user's --db-dir does not hold: the prompt shows their rows only)
    demonstrations = task.load_demonstrations(settings.demos, settings.max_input_chars,
                                              knowledge if settings.demos else None)
    num_provided = 0
    longest: dict[tuple, str] = {}
    contexts: dict[tuple, dict] = {}
    if settings.questions:
        for question in task.iter_questions(settings.questions, knowledge, settings.max_input_chars):  # checks every row
            num_provided += 1
            key = context_key(task, question)
            text = question[task.question_field]
            if key not in contexts:
                contexts[key] = {name: question[name] for name in task.context_fields}
            if key not in longest or len(text) > len(longest[key]):
                longest[key] = text
        if not num_provided:
            raise InputError(f"{settings.questions}: no questions; expected JSON lines with {', '.join(task.question_fields)}")
    else:
        for context in task.question_contexts(knowledge):  # every context is used: a bad one fails before the LLM runs
            knowledge.check_record(context, f"task {task.name}")
            contexts[context_key(task, context)] = context
    num_questions = None if settings.questions else (settings.num_questions or task.default_num_questions)
    return RunInputs(task, knowledge, demonstrations, settings.questions, num_provided, num_questions,
                     settings.max_input_chars, list(contexts.values()), longest)


def check_prompts_fit(inputs: RunInputs, generator: Generator) -> None:
    """Before any generation request: make sure that every prompt of the run can fit the model's
    context (when the backend says how long it is), by building, for each context the run uses,
    its question-generation prompt and its answer-generation prompt for the longest question
    (the longest demonstration question when questions are generated).

    Raises:
        InputError: a prompt cannot fit even with one demonstration (the message names it).
    """
    task, knowledge, demonstrations = inputs.task, inputs.knowledge, inputs.demonstrations
    question_limit = generator.max_prompt_tokens(task.sampling.question_max_new_tokens)
    answer_limit = generator.max_prompt_tokens(task.sampling.answer_max_new_tokens)
    if question_limit is None and answer_limit is None:
        return
    longest_demo = max((d[task.question_field] for d in demonstrations), key=len)
    for context in inputs.contexts:
        if not inputs.questions_file:
            task.question_prompt(context, knowledge, demonstrations, random.Random(0), generator.count_tokens, question_limit)
        question = inputs.longest_question.get(context_key(task, context), longest_demo)
        task.answer_prompt({task.question_field: question, **context}, knowledge, demonstrations, generator.count_tokens,
                           answer_limit)


def run_metadata(result: GenerateResult, inputs: RunInputs, verifier: Verifier) -> dict:
    """The ``symgen`` block of the dataset card: everything needed to understand and re-check the
    run, and to render its card (see :mod:`symgen_datasets.publish.card`)."""
    task, demonstrations, settings = inputs.task, inputs.demonstrations, result.settings
    options = {name: (redact_url(str(value)) if "://" in str(value) else Path(value).name)
               if isinstance(value, (str, Path)) and ("/" in str(value)) else value
               for name, value in task.options_with_defaults(settings.task_options).items()}
    return {
        "tool_version": __version__,
        "task": task.name,
        "task_options": options,
        "generator": {"spec": result.generator_spec, "model": result.generator_model, "revision": result.generator_revision,
                      **({"n_sampling": result.generator_n_supported} if result.generator_n_supported is not None else {})},
        "settings": {
            "num_questions": inputs.num_questions,
            "questions_file": Path(settings.questions).name if settings.questions else None,
            "num_samples": settings.num_samples,
            "sampling": settings.sampling,
            **({"confidence": settings.confidence} if settings.sampling == "adaptive" else {}),
            "min_votes": settings.min_votes,
            "temperature": settings.temperature,
            "seed": settings.seed,
            "timeout_s": settings.timeout_s,
        },
        "verifier": {"name": verifier.name, "description": verifier.describe(), **verifier.provenance()},
        "demonstrations": {"count": len(demonstrations), "sha256": _sha256_lines(demonstrations)},
        "prompt_templates": task.template_hashes(),
        "counts": dict(result.counts),
        "bill": _priced(result.bill, settings.prices()),
        "vote_histogram": {int(votes): int(n) for votes, n in result.vote_histogram},
        "dataset": dataset_block(task, result.columns),
        "version": None,
        "parent_version": None,
        "changes": [],
    }


def generate(settings: GenerateSettings, write: bool = True, **objects) -> GenerateResult | None:
    """:func:`run`, then (``write``) the dataset folder ``settings.output_folder()``: parquet for
    the kept rows and the candidates, and the dataset card (all or nothing).

    Args:
        settings: the run's settings.
        write: write the folder (``False`` for builders, which keep the Arrow files).
        objects: ``task``, ``generator``, ``loop``, ``verifier``, ``node``: see :func:`run`.

    Returns:
        A :class:`GenerateResult` (``None`` in the processes other than the main one).

    Raises:
        InputError, GenerationError, BusyError, BudgetExhausted: as :func:`run`; and
        InputError for an ``--output`` that exists (without ``overwrite``) or cannot be written,
        checked before anything is sent.
    """
    output = settings.output_folder()
    node = objects.get("node")
    if write and (node is None or node.is_main):
        check_output(output, settings.overwrite)
    result = run(settings, **objects)
    if result is None or not write:
        return result

    def card(configs: list[dict]) -> str:
        from ..publish import render_card

        result.card = render_card(result.metadata, configs, repo_id=str(output))
        return result.card

    with quiet_datasets():
        result.output = write_dataset_folder(
            output, {"default": result.rows, "candidates": result.candidates}, card, settings.overwrite
        )
    return result


def run(
    settings: GenerateSettings,
    *,
    task: Task | None = None,
    generator: Generator | None = None,
    loop: EventLoopThread | None = None,
    verifier: Verifier | None = None,
    node: Node | None = None,
) -> GenerateResult | None:
    """Run the SymGen pipeline: question generation (unless ``settings.questions``), answer
    generation, verification, selection, each streamed to an Arrow file in
    ``<work folder>/arrow`` (no stage holds the candidates in memory).

    Inputs are all checked before the first LLM request; so is every prompt's length when the
    backend reports its context. The main process holds the work folder's lock (one run per
    folder) and snapshots the task's knowledge (e.g. databases) before the first request.

    Launched as several processes (``accelerate launch`` or ``torchrun``; see
    :mod:`symgen_datasets.pipeline.distributed`), each process answers and verifies its shard of
    the questions and the main process merges them; the result equals one process's.

    Args:
        settings: the run's settings.
        task: the task (default: ``settings.task`` from the registry).
        generator: the LLM backend (default: built from ``settings.generator``); a given one is
            wrapped in the response cache but never closed. Pass its ``loop`` with it when it
            was used on one (HTTP clients are bound to their event loop).
        loop: the event loop thread the generator runs on (default: a new one, closed at the end).
        verifier: the task's verifier (default: ``task.make_verifier``; a given one is not closed).
        node: this process's place in a process group (default: from the environment; only a
            group this function joined is left at the end).

    Returns:
        A :class:`GenerateResult` (``None`` in the processes other than the main one).

    Raises:
        InputError: bad input (file and line named) or option.
        BusyError: the work folder is in use by another run, or a database by a writer.
        GenerationError: the LLM backend failed for good or cannot be reached, or no question
            was kept (an empty split cannot be loaded with ``load_dataset``).
        BudgetExhausted: ``--max-requests`` was reached (resumable).
    """
    own_node = node is None
    node = node or current_node()
    snapshots = settings.work_folder() / "task_knowledge"
    inputs = load_inputs(settings, task, snapshots)
    task, knowledge = inputs.task, inputs.knowledge
    with ExitStack() as stack:
        # one run per work folder; the other processes of a multi-process run share the main one's lock
        stack.enter_context(RunLock(settings.work_folder()) if node.is_main else nullcontext())
        if node.is_main:  # one consistent snapshot of the knowledge for the whole run, before any request
            stack.callback(knowledge.cleanup)
            knowledge.prepare(inputs.contexts)
        if verifier is None:
            verifier = stack.enter_context(task.make_verifier(knowledge, settings.timeout_s))
        inputs.demonstrations = task.adapt_demonstrations(inputs.demonstrations, knowledge, verifier)
        return _run(settings, inputs, verifier, node, own_node, generator, loop)


def _run(settings: GenerateSettings, inputs: RunInputs, verifier: Verifier, node: Node, own_node: bool,
         generator: Generator | None, loop: EventLoopThread | None) -> GenerateResult | None:
    """:func:`run` once its inputs are checked, its work folder locked and its knowledge ready."""
    task = inputs.task
    own_generator, own_loop = generator is None, loop is None
    if generator is None:
        generator = from_spec(settings.generator, concurrency=settings.concurrency,
                              retry=RetryPolicy(max_attempts=settings.max_retries),
                              request_timeout_s=settings.request_timeout_s)
    inner = generator
    if settings.cache:
        generator = CachedGenerator(generator, ResponseCache(settings.work_folder() / "responses.sqlite"), settings.max_requests,
                                    settings.max_tokens_billed)
    columns = Columns(task, verifier.outcome_word)
    arrow_folder = settings.work_folder() / "arrow"
    shard_folder = arrow_folder if node.world_size == 1 else arrow_folder / f"rank-{node.rank}-of-{node.world_size}"
    loop = loop or EventLoopThread()
    context = StageContext(
        task=task, knowledge=inputs.knowledge, verifier=verifier, demonstrations=inputs.demonstrations,
        generator=generator, loop=loop, num_samples=settings.num_samples, temperature=settings.temperature,
        seed=settings.seed, sampling=settings.sampling, min_votes=settings.min_votes, confidence=settings.confidence,
    )
    try:
        loop.run(generator.connect())
        if node.is_main:
            check_prompts_fit(inputs, generator)
        loop.run(generator.check())
        if node.is_main:
            arrow_folder.mkdir(parents=True, exist_ok=True)
            questions = _write_questions(context, inputs, columns, arrow_folder / "questions.arrow")
            context.count("questions", len(questions))
        node.wait_for_everyone()
        if node.world_size > 1:  # every process takes its contiguous shard of the questions
            import datasets
            from datasets.distributed import split_dataset_by_node

            whole = datasets.Dataset.from_file(str(arrow_folder / "questions.arrow"))
            questions = split_dataset_by_node(whole, rank=node.rank, world_size=node.world_size)
        shard_folder.mkdir(parents=True, exist_ok=True)
        verified = _run_answer_stages(context, questions, settings, columns, shard_folder)
    finally:
        if own_generator:
            loop.run(inner.aclose())
        if own_loop:
            loop.close()
        if isinstance(generator, CachedGenerator):
            generator.cache.close()

    shards = node.gather({
        "counts": context.counts,
        "retries": generator.retries,
        "hits": getattr(generator, "hits", 0),
        "bill": {**_bill(generator), **context.tokens},
        "verified": verified,
    })
    if own_node:
        node.leave()
    if not node.is_main:
        return None
    # the shards in rank order are the questions in order
    verified = ArrowTable.concatenate([shard["verified"] for shard in shards])
    if node.world_size > 1:
        context.counts = dict(sum((Counter(shard["counts"]) for shard in shards), Counter()))
    votes: Counter = Counter()
    kept_rows = _kept_rows(verified, settings.min_votes, generator.provenance, columns, votes,
                           task.run_row_fields(inputs.knowledge))
    rows = write_arrow(arrow_folder / "rows.arrow", columns.rows, kept_rows)
    context.count("questions_kept", len(rows))
    counts = _ordered_counts(context.counts, context.valid_count)
    if len(rows) == 0:
        raise NothingKept(
            f"no question reached --min-votes {settings.min_votes} "
            f"({', '.join(f'{name} {value}' for name, value in counts.items())}); nothing was written. "
            "Lower --min-votes, raise --num-samples, or use a stronger --generator",
            counts,
        )
    result = GenerateResult(
        rows=rows,
        candidates=verified.select_columns(columns.candidate_names),
        counts=counts,
        vote_histogram=sorted(votes.items()),
        settings=settings,
        columns=columns,
        generator_spec=generator.spec,
        generator_model=generator.model,
        generator_provenance=generator.provenance,
        generator_revision=generator.model_revision,
        retries=sum(shard["retries"] for shard in shards),
        cached=sum(shard["hits"] for shard in shards),
        generator_n_supported=generator.n_supported,
        bill={name: sum(shard["bill"].get(name, 0) for shard in shards) for name in {n for s in shards for n in s["bill"]}},
    )
    result.metadata = run_metadata(result, inputs, verifier)
    return result


def _priced(bill: dict, prices: tuple[float, float] | None) -> dict:
    """The bill with its ``cost`` under ``prices`` (per million prompt and completion tokens)."""
    bill = dict(bill)
    if prices is not None and "prompt_tokens" in bill:
        bill["price_per_mtok"] = list(prices)
        bill["cost"] = (bill["prompt_tokens"] * prices[0] + bill["completion_tokens"] * prices[1]) / 1e6
    return bill


def _bill(generator: Generator) -> dict[str, int]:
    """This process's token bill (see :attr:`GenerateResult.bill`); tokens are counted where
    responses go through the response cache (the default)."""
    bill = {"requests": int(generator.requests_sent or 0)}
    if isinstance(generator, CachedGenerator):
        bill.update(prompt_tokens=generator.prompt_tokens, completion_tokens=generator.completion_tokens,
                    cached_tokens=generator.cached_tokens)
    return bill


@dataclass
class DryRunEstimate:
    """What a run would send, computed before anything is sent.

    Attributes:
        question_requests: (first round, at most) question-generation prompts; (0, 0) with
            ``--questions``.
        answer_requests: answer-generation prompts (one per question).
        completions: completions asked in the first round (every prompt times its samples).
        prompt_tokens: tokens sent, estimated (every completion resends its prompt).
        prompt_tokens_with_n: on an OpenAI-compatible server that takes ``n``, the prompt tokens
            billed (each prompt once per request); ``None`` for other backends.
        max_generated_tokens: generated tokens at most.
    """

    question_requests: tuple[int, int]
    answer_requests: int
    completions: int
    prompt_tokens: int
    max_generated_tokens: int
    prompt_tokens_with_n: int | None = None
    sampling: str = "all"

    def __str__(self) -> str:
        first, most = self.question_requests
        questions = f"{first} to {most}" if most else "0 (questions are given)"
        rounds = self.sampling in ("exact", "adaptive")
        return (
            f"question-generation prompts: {questions}\n"
            f"answer-generation prompts:   {self.answer_requests}\n"
            f"completions (first round):   {self.completions}{' at most' if rounds else ''}\n"
            f"prompt tokens (estimated):   {self.prompt_tokens}{' at most' if rounds else ''} (one request per candidate)\n"
            + (f"  ... if the server takes n: {self.prompt_tokens_with_n} (each prompt sent once per request)\n"
               if self.prompt_tokens_with_n is not None and self.sampling != "fixed" else "")
            + f"generated tokens (at most):  {self.max_generated_tokens}\n"
            + f"sampling:                    {self.sampling}"
            + (" (rounds stop once a question's outcome is settled: usually fewer candidates, see --sampling)"
               if rounds else "")
        )


def dry_run(settings: GenerateSettings, task: Task | None = None) -> DryRunEstimate:
    """Count the requests and estimate the tokens of a run without sending anything (auxiliary
    requests, such as test-input generation, not included).

    The inputs are checked as in :func:`run`. Prompts are rendered for real with the backend's
    token counter (an estimate of 1 token per 3.5 characters for remote backends); for generated
    questions, each answer prompt is estimated from a demonstration's question.

    Raises:
        InputError: as :func:`run`.
    """
    from ..generators.openai_compatible import MAX_N
    from .stages import MAX_QUESTION_REQUESTS_PER_QUESTION, QUESTIONS_PER_PROMPT

    inputs = load_inputs(settings, task)  # knowledge snapshots in a temporary folder: a dry run writes nothing
    task, knowledge, demonstrations = inputs.task, inputs.knowledge, inputs.demonstrations
    knowledge.prepare(inputs.contexts)
    try:
        generator = from_spec(settings.generator, concurrency=settings.concurrency)
        count = generator.count_tokens
        question_limit = generator.max_prompt_tokens(task.sampling.question_max_new_tokens)
        answer_limit = generator.max_prompt_tokens(task.sampling.answer_max_new_tokens)
        k = settings.num_samples
        if inputs.questions_file:
            answer_tokens = sum(count(task.answer_prompt(q, knowledge, demonstrations, count, answer_limit))
                                for q in inputs.provided())
            n = inputs.num_provided
            with_n = answer_tokens * math.ceil(k / MAX_N) if generator.backend == "openai" else None
            return DryRunEstimate((0, 0), n, n * k, answer_tokens * k, n * k * task.sampling.answer_max_new_tokens, with_n,
                                  settings.sampling)
        n = inputs.num_questions
        first = math.ceil(n * 1.25 / QUESTIONS_PER_PROMPT)
        most = MAX_QUESTION_REQUESTS_PER_QUESTION * n
        rng = random.Random(settings.seed)
        question_tokens = [count(task.question_prompt(c, knowledge, demonstrations, rng, count, question_limit))
                           for c in inputs.contexts]
        first_question = demonstrations[0][task.question_field]
        answer_tokens = [count(task.answer_prompt({task.question_field: first_question, **c}, knowledge, demonstrations,
                                                  count, answer_limit)) for c in inputs.contexts]
        mean_question = sum(question_tokens) / len(question_tokens)
        mean_answer = sum(answer_tokens) / len(answer_tokens)
        completions = first * QUESTIONS_PER_PROMPT + n * k
        prompt_tokens = int(first * QUESTIONS_PER_PROMPT * mean_question + n * k * mean_answer)
        generated = first * QUESTIONS_PER_PROMPT * task.sampling.question_max_new_tokens + n * k * task.sampling.answer_max_new_tokens
        with_n = (int(first * mean_question * math.ceil(QUESTIONS_PER_PROMPT / MAX_N) + n * mean_answer * math.ceil(k / MAX_N))
                  if generator.backend == "openai" else None)
        return DryRunEstimate((first, most), n, completions, prompt_tokens, generated, with_n, settings.sampling)
    finally:
        knowledge.cleanup()


def _answer_window(generator: Generator, num_samples: int) -> int:
    """Questions in flight at once in :func:`answer_stream`: enough requests for four rounds of
    the backend's concurrency, so one is always waiting when another finishes; one at a time for
    in-process backends."""
    return max(1, math.ceil(4 * generator.concurrency / num_samples)) + 1 if generator.concurrency > 1 else 1


def _with_bill(progress, generator: Generator) -> Iterator:
    """``progress``'s items, its bar showing the requests sent and the tokens billed so far."""
    for item in progress:
        tokens = getattr(generator, "prompt_tokens", 0) + getattr(generator, "completion_tokens", 0)
        progress.set_postfix(requests=generator.requests_sent, tokens=f"{tokens:,}", refresh=False)
        yield item


def _rows(dataset) -> Iterator[dict]:
    """The rows of ``dataset`` (an :class:`ArrowTable` or a ``Dataset``), read as a stream."""
    for batch in stream_batches(dataset):
        yield from batch.to_pylist()


def _run_answer_stages(context: StageContext, questions, settings: GenerateSettings, columns: Columns,
                       arrow_folder: Path) -> ArrowTable:
    """Answer generation streamed to ``answers.arrow``, then verification streamed to
    ``verified.arrow`` (both in ``arrow_folder``), each file read back batch by batch: memory
    holds a window of questions, whatever their number. Under ``--sampling exact`` or
    ``adaptive`` both run together (:func:`~symgen_datasets.pipeline.stages.vote_stream`) into
    ``verified.arrow``.

    Returns:
        The verified questions (:attr:`Columns.verified`) in ``verified.arrow``.
    """
    from tqdm.auto import tqdm

    if settings.sampling in ("exact", "adaptive"):  # rounds: each question verified as its candidates come
        window = _answer_window(context.generator, max(1, settings.num_samples // 2))
        progress = tqdm(vote_stream(context, _rows(questions), window), total=len(questions),
                        desc=f"answer generation and verification ({settings.sampling} voting)", unit="question")
        return write_arrow(arrow_folder / "verified.arrow", columns.verified, _with_bill(progress, context.generator))
    window = _answer_window(context.generator, settings.num_samples)
    stream = answer_stream(context, _rows(questions), window)
    progress = tqdm(stream, total=len(questions), desc="answer generation", unit="question")
    answers = write_arrow(arrow_folder / "answers.arrow", columns.answers, _with_bill(progress, context.generator))
    progress = tqdm(verify_stream(context, answers), total=len(answers), desc="verification", unit="question")
    return write_arrow(arrow_folder / "verified.arrow", columns.verified, progress)


def _write_questions(context: StageContext, inputs: RunInputs, columns: Columns, path: Path) -> ArrowTable:
    """Write the run's questions, numbered (``question_index``), to the Arrow file ``path``: the
    ``--questions`` rows, or new ones from question generation."""
    if inputs.questions_file:
        rows = (dict(q, question_source="provided") for q in inputs.provided())
        context.count("questions_provided", inputs.num_provided)
    else:
        context.count("questions_asked", inputs.num_questions)
        rows = generate_questions(context, inputs.num_questions)
    return write_arrow(path, columns.questions, ({**row, "question_index": index} for index, row in enumerate(rows)))


def _kept_rows(dataset: ArrowTable, min_votes: int, generator: str, columns: Columns, votes: Counter,
               shared: dict[str, str] | None = None) -> Iterator[dict]:
    """Selection as a stream: the kept rows (:attr:`Columns.row_names`, each checked against the
    row schema) of the verified questions, read batch by batch; ``votes`` counts the questions
    per number of votes (the card's histogram); ``shared``: fields every row gets (the task's
    :meth:`~symgen_datasets.tasks.base.Task.run_row_fields`)."""
    task = columns.task
    index = 0
    base = [name for name in columns.row_names if name not in task.extra_row_fields and name != "generator"]
    for batch in stream_batches(dataset):
        data = batch.to_pydict()
        votes.update(data["votes"])
        for position, keep in enumerate(select(data, min_votes)):
            if keep:
                row = {name: data[name][position] for name in base}
                verified = {name: values[position] for name, values in data.items()}
                row.update(shared or {})
                row.update(task.row_extras(verified, data["winner_detail"][position]), generator=generator)
                row = {name: row[name] for name in columns.row_names}
                validate_record(row, columns.row_schema, f"kept row {index}")
                index += 1
                yield row


_COUNT_ORDER = [
    "questions_asked", "question_requests", "questions_sampled", "questions_parsed", "questions_provided",
    "questions", "candidates_sampled", "candidates_parsed", "<valid>", "questions_kept",
]


def _ordered_counts(counts: dict[str, int], valid: str) -> dict[str, int]:
    order = [valid if name == "<valid>" else name for name in _COUNT_ORDER]
    return {name: counts[name] for name in order if name in counts}
