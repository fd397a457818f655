"""The SymGen stages: question generation, answer generation, verification and selection.

``generate_answers``, ``verify`` and ``select`` are batched ``Dataset.map`` / ``Dataset.filter``
functions: they take a batch (a dict of column lists) and a :class:`StageContext` (bind it with
``fn_kwargs``) and return new columns. ``answer_stream`` and ``verify_stream`` are answer generation
and verification as streams of rows with no batch boundary (``symgen generate`` writes each to an
Arrow file as it comes).
``generate_questions`` is sequential by nature (global deduplication) and returns plain rows.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import math
import random
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator

from tqdm.auto import tqdm

from ..errors import BudgetExhausted
from ..generators import EventLoopThread, Generator, SamplingParams, derive_seed, sample_many
from ..tasks import DatabaseDirectory, TextToSQLTask
from ..tasks.text_to_sql import question_key
from ..verifiers import ExecutionResult, SQLiteExecutor, distinct_programs, majority_vote

Batch = dict[str, list[Any]]

#: Questions sampled per question-generation request (one prompt, several seeds).
QUESTIONS_PER_PROMPT = 4
#: Question generation gives up after this many requests per wanted question.
MAX_QUESTION_REQUESTS_PER_QUESTION = 4


@dataclass
class StageContext:
    """What the stages share during one run.

    Attributes:
        task, databases, demonstrations: the task, its databases and its demonstrations.
        executor: the sandboxed SQL executor.
        generator: the LLM backend; ``loop`` runs its coroutines (both unused by ``verify``, so
            re-verification needs no LLM).
        num_samples: candidates per question (K); temperature: their sampling temperature.
        seed: the run seed; every request's seed derives from it.
        counts: stage counters filled in as the stages run (for the summary and the card).
    """

    task: TextToSQLTask
    databases: DatabaseDirectory
    executor: SQLiteExecutor
    demonstrations: list[dict[str, str]] = field(default_factory=list)
    generator: Generator | None = None
    loop: EventLoopThread | None = None
    num_samples: int = 20
    temperature: float = 0.8
    seed: int = 0
    counts: dict[str, int] = field(default_factory=dict)

    def count(self, name: str, amount: int = 1) -> None:
        self.counts[name] = self.counts.get(name, 0) + amount


def generate_questions(context: StageContext, num_questions: int) -> Iterator[dict[str, str]]:
    """Question generation (SymGen §2.2): sample new questions per database until
    ``num_questions`` unique ones are found.

    Requests go round-robin over the databases (in an order shuffled by the seed); each request
    samples :data:`QUESTIONS_PER_PROMPT` questions from one prompt whose demonstrations are
    shuffled per request. Questions are post-processed and length-filtered by
    :meth:`TextToSQLTask.parse_question`, deduplicated after :func:`question_key`, and never equal
    to a demonstration. Stops after ``MAX_QUESTION_REQUESTS_PER_QUESTION * num_questions``
    requests even when fewer questions were found.

    Yields:
        Rows ``{"question", "db_id", "question_source": "generated"}`` as they are found, at most
        ``num_questions`` (only a 64-bit hash of each question is kept for deduplication).
    """
    task, generator = context.task, context.generator
    db_ids = list(context.databases.db_ids)
    random.Random(derive_seed(context.seed, "databases")).shuffle(db_ids)
    seen = {_key_hash(d["question"]) for d in context.demonstrations}
    params = SamplingParams(
        context.temperature, task.sampling.question_max_new_tokens, task.sampling.question_stop
    )
    found = 0
    slot = 0
    budget = MAX_QUESTION_REQUESTS_PER_QUESTION * num_questions
    max_tokens = generator.max_prompt_tokens(params.max_new_tokens)
    progress = tqdm(total=num_questions, desc="question generation", unit="question")
    while found < num_questions and slot < budget:
        missing = num_questions - found
        wanted = min(math.ceil(missing * 1.25 / QUESTIONS_PER_PROMPT), budget - slot)
        requests, slot_dbs = [], []
        for index in range(slot, slot + wanted):
            db_id = db_ids[index % len(db_ids)]
            rng = random.Random(derive_seed(context.seed, "question-prompt", index))
            prompt = task.question_prompt(
                context.databases.get(db_id), context.demonstrations, rng, generator.count_tokens, max_tokens
            )
            seeds = [derive_seed(context.seed, "question", index, i) for i in range(QUESTIONS_PER_PROMPT)]
            requests.append((prompt, params, seeds))
            slot_dbs.append(db_id)
        slot += wanted
        results = context.loop.run(sample_many(generator, requests))
        context.count("question_requests", wanted)
        for db_id, completions in zip(slot_dbs, results):
            for completion in completions:
                context.count("questions_sampled")
                question = task.parse_question(completion.text)
                if question is None:
                    continue
                context.count("questions_parsed")
                key = _key_hash(question)
                if key in seen or found == num_questions:
                    continue
                seen.add(key)
                found += 1
                progress.update(1)
                yield {"question": question, "db_id": db_id, "question_source": "generated"}
        progress.set_postfix(requests=slot)
    progress.close()


def _key_hash(question: str) -> int:
    """A 64-bit hash of the question's :func:`question_key` (what deduplication compares)."""
    return int.from_bytes(hashlib.blake2b(question_key(question).encode(), digest_size=8).digest(), "big")


def _answer_request(context: StageContext, index: int, question: str, db_id: str) -> tuple:
    """The ``(prompt, params, seeds)`` request for question number ``index``: K candidates, the
    i-th seeded with ``derive_seed(seed, "answer", index, i)``."""
    task, generator = context.task, context.generator
    params = SamplingParams(context.temperature, task.sampling.answer_max_new_tokens, task.sampling.answer_stop)
    prompt = task.answer_prompt(context.databases.get(db_id), question, context.demonstrations, generator.count_tokens,
                                generator.max_prompt_tokens(params.max_new_tokens))
    return prompt, params, [derive_seed(context.seed, "answer", index, i) for i in range(context.num_samples)]


def _answer_columns(context: StageContext, completions: list) -> tuple[list[str], list]:
    """A question's ``candidates`` (``""`` where no program was extracted) and
    ``candidate_logprobs``, counted in ``context``."""
    programs = [context.task.parse_program(c.text) for c in completions]
    context.count("candidates_sampled", len(programs))
    context.count("candidates_parsed", sum(p is not None for p in programs))
    return [p or "" for p in programs], [c.mean_logprob for c in completions]


def generate_answers(batch: Batch, indices: list[int], context: StageContext) -> Batch:
    """Answer generation (SymGen §2.2): K candidate programs per question by temperature sampling.

    Batched ``Dataset.map`` function (``with_indices=True``). Candidate ``i`` of question ``q``
    (its row index) is seeded with ``derive_seed(seed, "answer", q, i)``. Each batch waits for its
    last request; :func:`answer_stream` overlaps questions instead (what ``symgen generate`` uses).

    Returns:
        ``candidates`` (K programs per question; ``""`` where no program could be extracted) and
        ``candidate_logprobs`` (K mean token log-probabilities, ``None`` when unknown).
    """
    requests = [_answer_request(context, i, q, d) for i, q, d in zip(indices, batch["question"], batch["db_id"])]
    results = context.loop.run(sample_many(context.generator, requests))
    candidates, logprobs = zip(*(_answer_columns(context, completions) for completions in results))
    return {"candidates": list(candidates), "candidate_logprobs": list(logprobs)}


def answer_stream(context: StageContext, rows: Iterable[dict], window: int) -> Iterator[dict]:
    """Answer generation as a stream: the rows of ``rows`` (``question``, ``db_id``,
    ``question_index``, ...) in order, each with ``candidates`` and ``candidate_logprobs`` added
    (as :func:`generate_answers`; candidate ``i`` is seeded from ``question_index`` and ``i``).

    Up to ``window`` questions are in flight at once and a new one starts as soon as the oldest
    is done, so the backend never waits on a batch boundary; memory holds ``window`` questions,
    whatever the number of rows.

    Raises:
        GenerationError: a request failed for good; the requests in flight are cancelled.
        BudgetExhausted: ``--max-requests`` was reached; the requests in flight finish (and are
            stored) first.
    """
    pending: deque[tuple[dict, concurrent.futures.Future]] = deque()
    generator, loop = context.generator, context.loop
    stopped_by: BaseException | None = None

    def oldest_answered() -> dict:
        row, future = pending.popleft()
        candidates, logprobs = _answer_columns(context, future.result())
        return {**row, "candidates": candidates, "candidate_logprobs": logprobs}

    try:
        for row in rows:
            request = _answer_request(context, row["question_index"], row["question"], row["db_id"])
            pending.append((row, loop.submit(generator.sample(*request))))
            while len(pending) >= window or (pending and pending[0][1].done()):
                yield oldest_answered()
        while pending:
            yield oldest_answered()
    except BaseException as error:
        stopped_by = error
        raise
    finally:
        futures = [future for _, future in pending]
        if not isinstance(stopped_by, BudgetExhausted):
            for future in futures:
                future.cancel()
        concurrent.futures.wait(futures)


#: The columns verification adds to an answered question.
VERIFY_COLUMNS = (
    "query", "votes", "num_candidates", "num_executable", "num_distinct_results", "logprob",
    "candidate_status", "candidate_result",
)


def verify_stream(context: StageContext, rows: Iterable[dict]) -> Iterator[dict]:
    """The agreement-based verifier as a stream: execute each distinct candidate once on the
    question's database (read-only, time-limited, in worker processes) and take the
    execution-based majority vote (:func:`~symgen_datasets.verifiers.majority_vote`).

    ``rows`` (with ``db_id``, ``candidates`` and ``candidate_logprobs``) are read lazily: the
    next questions are deduplicated, and the last ones voted on, while the workers execute
    (:meth:`SQLiteExecutor.execute_stream`); memory holds a window of questions, whatever their
    number. Candidates that are ``""`` (nothing extracted) count as candidates but never as votes.

    Yields:
        Each row, in order, with :data:`VERIFY_COLUMNS` added: ``query``, ``votes``,
        ``num_candidates``, ``num_executable``, ``num_distinct_results``, ``logprob`` (the vote),
        and per candidate ``candidate_status`` (``ok``, ``error``, ``timeout``, ``crash`` or
        ``unparsed``) and ``candidate_result`` (the result key).
    """
    pending: deque[tuple[dict, list[str], list[int]]] = deque()

    def jobs() -> Iterator[tuple[Any, list[str]]]:
        for row in rows:
            programs, index = distinct_programs(row["candidates"])
            pending.append((row, programs, index))
            yield context.databases.path(row["db_id"]), [p for p in programs if p]

    unparsed = ExecutionResult("unparsed", error="no SQL program in the completion")
    for executed in context.executor.execute_stream(jobs()):
        row, programs, index = pending.popleft()
        executed = iter(executed)
        outcomes = [next(executed) if program else unparsed for program in programs]
        vote = majority_vote(row["candidates"], outcomes, row["candidate_logprobs"], (programs, index))
        context.count("candidates_executable", vote.num_executable)
        yield {
            **row,
            "query": vote.query or "",
            "votes": vote.votes,
            "num_candidates": vote.num_candidates,
            "num_executable": vote.num_executable,
            "num_distinct_results": vote.num_distinct_results,
            "logprob": vote.logprob,
            "candidate_status": [outcomes[i].status for i in index],
            "candidate_result": [outcomes[i].key for i in index],
        }


def verify(batch: Batch, context: StageContext) -> Batch:
    """:func:`verify_stream` as a batched ``Dataset.map`` function.

    Args:
        batch: columns ``db_id``, ``candidates`` and ``candidate_logprobs`` at least.

    Returns:
        The :data:`VERIFY_COLUMNS` of the batch's rows.
    """
    names = list(batch)
    rows = (dict(zip(names, values)) for values in zip(*batch.values()))
    columns: Batch = {name: [] for name in VERIFY_COLUMNS}
    for row in verify_stream(context, rows):
        for name in VERIFY_COLUMNS:
            columns[name].append(row[name])
    return columns


def select(batch: Batch, min_votes: int) -> list[bool]:
    """Selection: keep a question only when its largest cluster has at least ``min_votes`` votes
    (SymGen's threshold V). Batched ``Dataset.filter`` function."""
    return [votes >= min_votes for votes in batch["votes"]]
