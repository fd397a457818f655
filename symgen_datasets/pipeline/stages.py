"""The SymGen stages: question generation, answer generation, verification and selection, for
any task (the task gives field names, prompts and parsing; its verifier checks candidates).

``generate_answers``, ``verify`` and ``select`` are batched ``Dataset.map`` / ``Dataset.filter``
functions: they take a batch (a dict of column lists) and a :class:`StageContext` (bind it with
``fn_kwargs``) and return new columns. ``answer_stream`` and ``verify_stream`` are answer
generation and verification as streams of rows with no batch boundary (``symgen generate`` writes
each to an Arrow file as it comes). ``generate_questions`` is sequential by nature (global
deduplication) and yields plain rows.
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
from ..tasks import Task, TaskKnowledge, question_key
from ..verifiers import ExecutionResult, Verifier, distinct_programs, majority_vote

Batch = dict[str, list[Any]]

#: Questions sampled per question-generation request (one prompt, several seeds).
QUESTIONS_PER_PROMPT = 4
#: Question generation gives up after this many requests per wanted question.
MAX_QUESTION_REQUESTS_PER_QUESTION = 4


@dataclass
class StageContext:
    """What the stages share during one run.

    Attributes:
        task, knowledge, demonstrations: the task, its knowledge and its demonstrations.
        verifier: the task's verifier (unused by answer generation).
        generator: the LLM backend; ``loop`` runs its coroutines (both unused by ``verify``, so
            re-verification needs no LLM).
        num_samples: candidates per question (K); temperature: their sampling temperature.
        seed: the run seed; every request's seed derives from it.
        counts: stage counters filled in as the stages run (for the summary and the card).
    """

    task: Task
    knowledge: TaskKnowledge
    verifier: Verifier | None = None
    demonstrations: list[dict[str, str]] = field(default_factory=list)
    generator: Generator | None = None
    loop: EventLoopThread | None = None
    num_samples: int = 20
    temperature: float = 0.8
    seed: int = 0
    counts: dict[str, int] = field(default_factory=dict)

    def count(self, name: str, amount: int = 1) -> None:
        self.counts[name] = self.counts.get(name, 0) + amount

    @property
    def valid_count(self) -> str:
        """The counter of candidates that passed the verifier: ``candidates_<outcome word>``."""
        return f"candidates_{self.verifier.outcome_word if self.verifier else 'valid'}"


def generate_questions(context: StageContext, num_questions: int) -> Iterator[dict[str, str]]:
    """Question generation (SymGen §2.2): sample new questions until ``num_questions`` unique
    ones are found.

    Requests go round the task's question contexts (its databases for SQL; one context for most
    tasks) in an order shuffled by the seed; each request samples :data:`QUESTIONS_PER_PROMPT`
    questions from one prompt whose demonstrations are shuffled per request. Questions are
    post-processed and length-filtered by :meth:`Task.parse_question`, deduplicated after
    :func:`question_key`, and never equal to a demonstration. Stops after
    ``MAX_QUESTION_REQUESTS_PER_QUESTION * num_questions`` requests even when fewer questions
    were found.

    Yields:
        Question rows (the task's question fields and ``question_source: "generated"``) as they
        are found, at most ``num_questions`` (only a 64-bit hash of each question is kept for
        deduplication).
    """
    task, generator = context.task, context.generator
    contexts = task.question_contexts(context.knowledge)
    random.Random(derive_seed(context.seed, "databases")).shuffle(contexts)  # label kept: it seeds existing runs
    seen = {_key_hash(d[task.question_field]) for d in context.demonstrations}
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
        requests, slot_contexts = [], []
        for index in range(slot, slot + wanted):
            question_context = contexts[index % len(contexts)]
            rng = random.Random(derive_seed(context.seed, "question-prompt", index))
            prompt = task.question_prompt(
                question_context, context.knowledge, context.demonstrations, rng, generator.count_tokens, max_tokens
            )
            seeds = [derive_seed(context.seed, "question", index, i) for i in range(QUESTIONS_PER_PROMPT)]
            requests.append((prompt, params, seeds))
            slot_contexts.append(question_context)
        slot += wanted
        results = context.loop.run(sample_many(generator, requests))
        context.count("question_requests", wanted)
        for question_context, completions in zip(slot_contexts, results):
            for completion in completions:
                context.count("questions_sampled")
                row = task.parse_question(completion.text, question_context)
                if row is None:
                    continue
                context.count("questions_parsed")
                key = _key_hash(row[task.question_field])
                if key in seen or found == num_questions:
                    continue
                seen.add(key)
                found += 1
                progress.update(1)
                yield {**row, "question_source": "generated"}
        progress.set_postfix(requests=slot)
    progress.close()


def _key_hash(question: str) -> int:
    """A 64-bit hash of the question's :func:`question_key` (what deduplication compares)."""
    return int.from_bytes(hashlib.blake2b(question_key(question).encode(), digest_size=8).digest(), "big")


def _answer_requests(context: StageContext, index: int, row: dict) -> list[tuple]:
    """The ``(prompt, params, seeds)`` requests for question number ``index``: K candidates, the
    i-th seeded with ``derive_seed(seed, "answer", index, i)``, then the task's auxiliary request
    if it has one (seeded with ``derive_seed(seed, "auxiliary", index, i)``)."""
    task, generator = context.task, context.generator
    params = SamplingParams(context.temperature, task.sampling.answer_max_new_tokens, task.sampling.answer_stop)
    prompt = task.answer_prompt(row, context.knowledge, context.demonstrations, generator.count_tokens,
                                generator.max_prompt_tokens(params.max_new_tokens))
    requests = [(prompt, params, [derive_seed(context.seed, "answer", index, i) for i in range(context.num_samples)])]
    auxiliary = task.auxiliary_request(row, context.knowledge, generator.count_tokens, generator.max_prompt_tokens)
    if auxiliary is not None:
        aux_prompt, max_new_tokens, stop, samples = auxiliary
        aux_params = SamplingParams(context.temperature, max_new_tokens, tuple(stop))
        requests.append((aux_prompt, aux_params, [derive_seed(context.seed, "auxiliary", index, i) for i in range(samples)]))
    return requests


def _answer_columns(context: StageContext, row: dict, results: list[list]) -> dict[str, list]:
    """A question's ``candidates`` (``""`` where no program was extracted),
    ``candidate_logprobs`` and the task's auxiliary columns, counted in ``context``."""
    task = context.task
    completions = results[0]
    programs = [task.parse_answer(c.text, row) for c in completions]
    context.count("candidates_sampled", len(programs))
    context.count("candidates_parsed", sum(p is not None for p in programs))
    columns = {"candidates": [p or "" for p in programs], "candidate_logprobs": [c.mean_logprob for c in completions]}
    if len(results) > 1:
        columns.update(task.parse_auxiliary(row, [c.text for c in results[1]]))
    for name in task.auxiliary_fields:
        columns.setdefault(name, [])
    return columns


def generate_answers(batch: Batch, indices: list[int], context: StageContext) -> Batch:
    """Answer generation (SymGen §2.2): K candidate programs per question by temperature sampling.

    Batched ``Dataset.map`` function (``with_indices=True``). Candidate ``i`` of question ``q``
    (its row index) is seeded with ``derive_seed(seed, "answer", q, i)``. Each batch waits for its
    last request; :func:`answer_stream` overlaps questions instead (what ``symgen generate`` uses).

    Returns:
        ``candidates`` (K programs per question; ``""`` where no program could be extracted),
        ``candidate_logprobs`` (K mean token log-probabilities, ``None`` when unknown) and the
        task's auxiliary columns.
    """
    names = list(batch)
    rows = [dict(zip(names, values)) for values in zip(*batch.values())]
    requests = [_answer_requests(context, i, row) for i, row in zip(indices, rows)]
    flat = context.loop.run(sample_many(context.generator, [r for group in requests for r in group]))
    columns: Batch = {}
    position = 0
    for row, group in zip(rows, requests):
        answered = _answer_columns(context, row, flat[position:position + len(group)])
        position += len(group)
        for name, value in answered.items():
            columns.setdefault(name, []).append(value)
    return columns


def answer_stream(context: StageContext, rows: Iterable[dict], window: int) -> Iterator[dict]:
    """Answer generation as a stream: the rows of ``rows`` (question fields,
    ``question_index``, ...) in order, each with ``candidates``, ``candidate_logprobs`` and the
    task's auxiliary columns added (as :func:`generate_answers`; candidate ``i`` is seeded from
    ``question_index`` and ``i``).

    Up to ``window`` questions are in flight at once and a new one starts as soon as the oldest
    is done, so the backend never waits on a batch boundary; memory holds ``window`` questions,
    whatever the number of rows.

    Raises:
        GenerationError: a request failed for good; the requests in flight are cancelled.
        BudgetExhausted: ``--max-requests`` was reached; the requests in flight finish (and are
            stored) first.
    """
    pending: deque[tuple[dict, list[concurrent.futures.Future]]] = deque()
    generator, loop = context.generator, context.loop
    stopped_by: BaseException | None = None

    def oldest_answered() -> dict:
        row, futures = pending.popleft()
        return {**row, **_answer_columns(context, row, [future.result() for future in futures])}

    try:
        for row in rows:
            requests = _answer_requests(context, row["question_index"], row)
            pending.append((row, [loop.submit(generator.sample(*request)) for request in requests]))
            while len(pending) >= window or (pending and all(f.done() for f in pending[0][1])):
                yield oldest_answered()
        while pending:
            yield oldest_answered()
    except BaseException as error:
        stopped_by = error
        raise
    finally:
        futures = [future for _, group in pending for future in group]
        if not isinstance(stopped_by, BudgetExhausted):
            for future in futures:
                future.cancel()
        concurrent.futures.wait(futures)


def verify_columns(task: Task, verifier: Verifier) -> tuple[str, ...]:
    """The columns verification adds to an answered question: the winning program (under the
    task's answer field), the vote, and each candidate's status and result key."""
    return (task.answer_field, "votes", "num_candidates", f"num_{verifier.outcome_word}", "num_distinct_results",
            "logprob", "candidate_status", "candidate_result", "winner_detail")


def verify_stream(context: StageContext, rows: Iterable[dict]) -> Iterator[dict]:
    """The agreement-based verifier as a stream: each distinct candidate (after the verifier's
    normalisation) is verified once in the verifier's worker processes, then the shared
    majority vote (:func:`~symgen_datasets.verifiers.majority_vote`) clusters the candidates by
    the verifier's agreement (:meth:`~symgen_datasets.verifiers.Verifier.cluster_labels`).

    ``rows`` (with ``candidates``, ``candidate_logprobs`` and what the verifier's context needs)
    are read lazily: the next questions are deduplicated, and the last ones voted on, while the
    workers run; memory holds a window of questions, whatever their number. Candidates that are
    ``""`` (nothing extracted) count as candidates but never as votes.

    Yields:
        Each row, in order, with :func:`verify_columns` added: the winning program (under the
        task's answer field, ``""`` when no candidate passed), ``votes``, ``num_candidates``,
        ``num_<outcome word>``, ``num_distinct_results``, ``logprob``, per candidate
        ``candidate_status`` (``ok``, ``error``, ``timeout``, ``crash`` or ``unparsed``) and
        ``candidate_result`` (the result key), and ``winner_detail`` (the winning outcome's
        detail, for the task's kept-row extras).
    """
    task, verifier = context.task, context.verifier
    pending: deque[tuple[dict, list[str], list[int]]] = deque()
    valid_column, valid_count = f"num_{verifier.outcome_word}", context.valid_count

    def jobs() -> Iterator[tuple[Any, list[str]]]:
        for row in rows:
            programs, index = distinct_programs(row["candidates"], verifier.normalize)
            pending.append((row, programs, index))
            yield verifier.context(row), [p for p in programs if p]

    unparsed = ExecutionResult("unparsed", error="no program in the completion")
    for executed in verifier.execute_stream(jobs()):
        row, programs, index = pending.popleft()
        executed = iter(executed)
        outcomes = [next(executed) if program else unparsed for program in programs]
        vote = majority_vote(row["candidates"], outcomes, row["candidate_logprobs"], (programs, index),
                             verifier.cluster_labels(outcomes, index), verifier.barred_labels,
                             getattr(verifier, "representative", "logprob"))
        context.count(valid_count, vote.num_executable)
        yield {
            **row,
            task.answer_field: vote.program or "",
            "votes": vote.votes,
            "num_candidates": vote.num_candidates,
            valid_column: vote.num_executable,
            "num_distinct_results": vote.num_distinct_results,
            "logprob": vote.logprob,
            "candidate_status": [outcomes[i].status for i in index],
            "candidate_result": [outcomes[i].key for i in index],
            "winner_detail": outcomes[vote.winner].detail if vote.winner is not None else None,
        }


def verify(batch: Batch, context: StageContext) -> Batch:
    """:func:`verify_stream` as a batched ``Dataset.map`` function.

    Args:
        batch: ``candidates``, ``candidate_logprobs`` and the task's question fields at least.

    Returns:
        The :func:`verify_columns` of the batch's rows.
    """
    names = list(batch)
    rows = (dict(zip(names, values)) for values in zip(*batch.values()))
    columns: Batch = {name: [] for name in verify_columns(context.task, context.verifier)}
    for row in verify_stream(context, rows):
        for name in columns:
            columns[name].append(row[name])
    return columns


def select(batch: Batch, min_votes: int) -> list[bool]:
    """Selection: keep a question only when its largest cluster has at least ``min_votes`` votes
    (SymGen's threshold V). Batched ``Dataset.filter`` function."""
    return [votes >= min_votes for votes in batch["votes"]]
