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

import asyncio
import concurrent.futures
import queue
import hashlib
import math
import random
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Sequence

from tqdm.auto import tqdm

from ..errors import BudgetExhausted
from ..generators import Completion, EventLoopThread, Generator, SamplingParams, derive_seed, sample_many
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
        sampling: ``fixed``, ``all``, ``exact`` or ``adaptive`` (see
            :mod:`~symgen_datasets.pipeline.voting`); min_votes: V; confidence: ``adaptive``'s level.
        counts: stage counters filled in as the stages run (for the summary and the card).
        tokens: answer generation's tokens per question summed (``answer_tokens``), and what
            SymGen's fixed procedure would have been billed for the same questions
            (``fixed_answer_tokens``: K requests, each with the prompt and one candidate).
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
    sampling: str = "all"
    min_votes: int = 5
    confidence: float = 0.95
    counts: dict[str, int] = field(default_factory=dict)
    tokens: dict[str, int] = field(default_factory=dict)

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


def _sent_requests(context: StageContext, requests: list[tuple]) -> list[list[tuple]]:
    """The requests actually sent for a question's ``requests`` (:func:`_answer_requests`), one
    list per request: under ``--sampling fixed`` (SymGen's procedure) the answer request becomes
    one request per candidate; otherwise each goes as it is (``n`` > 1 where the server takes it).
    Their completions, joined per list, are the question's results."""
    return [[(prompt, params, [seed]) for seed in seeds] if position == 0 and context.sampling == "fixed"
            else [(prompt, params, seeds)] for position, (prompt, params, seeds) in enumerate(requests)]


def _count_tokens(context: StageContext, completions: Sequence[Completion], auxiliary: Sequence[Completion] = ()) -> None:
    """Add a question's answer-generation tokens to ``context.tokens``: what its requests were
    billed (``answer_tokens``) and what K requests of one candidate each would have been
    (``fixed_answer_tokens``: K x (the prompt + the mean candidate's tokens)); auxiliary requests
    count the same on both sides."""
    if not completions:
        return
    prompt = max(c.prompt_tokens for c in completions)
    generated = sum(c.completion_tokens for c in completions)
    extra = sum(c.prompt_tokens + c.completion_tokens for c in auxiliary)
    billed = sum(c.prompt_tokens for c in completions) + generated + extra
    fixed = round(context.num_samples * (prompt + generated / len(completions))) + extra
    context.tokens["answer_tokens"] = context.tokens.get("answer_tokens", 0) + billed
    context.tokens["fixed_answer_tokens"] = context.tokens.get("fixed_answer_tokens", 0) + fixed


def _answer_columns(context: StageContext, row: dict, results: list[list]) -> dict[str, list]:
    """A question's ``candidates`` (``""`` where no program was extracted),
    ``candidate_logprobs`` and the task's auxiliary columns, counted in ``context``."""
    task = context.task
    completions = results[0]
    _count_tokens(context, completions, results[1] if len(results) > 1 else ())
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
    split = [_sent_requests(context, _answer_requests(context, i, row)) for i, row in zip(indices, rows)]
    flat = context.loop.run(sample_many(context.generator, [r for group in split for parts in group for r in parts]))
    columns: Batch = {}
    position = 0
    for row, group in zip(rows, split):
        results = []
        for parts in group:
            results.append([c for part in flat[position:position + len(parts)] for c in part])
            position += len(parts)
        answered = _answer_columns(context, row, results)
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
    pending: deque[tuple[dict, list[list[concurrent.futures.Future]]]] = deque()
    generator, loop = context.generator, context.loop
    stopped_by: BaseException | None = None

    def oldest_answered() -> dict:
        row, groups = pending.popleft()
        results = [[c for future in group for c in future.result()] for group in groups]
        return {**row, **_answer_columns(context, row, results)}

    def oldest_done() -> bool:
        return all(future.done() for group in pending[0][1] for future in group)

    try:
        for row in rows:
            sent = _sent_requests(context, _answer_requests(context, row["question_index"], row))
            pending.append((row, [[loop.submit(generator.sample(*request)) for request in group] for group in sent]))
            while len(pending) >= window or (pending and oldest_done()):
                yield oldest_answered()
        while pending:
            yield oldest_answered()
    except BaseException as error:
        stopped_by = error
        raise
    finally:
        futures = [future for _, groups in pending for group in groups for future in group]
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
    verifier = context.verifier
    pending: deque[tuple[dict, list[str], list[int]]] = deque()

    def jobs() -> Iterator[tuple[Any, list[str]]]:
        for row in rows:
            programs, index = distinct_programs(row["candidates"], verifier.normalize)
            pending.append((row, programs, index))
            yield verifier.context(row), [p for p in programs if p]

    for executed in verifier.execute_stream(jobs()):
        row, programs, index = pending.popleft()
        executed = iter(executed)
        yield _voted_row(context, row, programs, index, [next(executed) if program else UNPARSED for program in programs])


#: The outcome of a candidate from which no program was extracted.
UNPARSED = ExecutionResult("unparsed", error="no program in the completion")


def _voted_row(context: StageContext, row: dict, programs: list[str], index: list[int],
               outcomes: list[ExecutionResult]) -> dict:
    """``row`` with the :func:`verify_columns` of the shared majority vote over its candidates
    (``programs, index``: their :func:`distinct_programs`; one outcome per distinct program)."""
    task, verifier = context.task, context.verifier
    vote = majority_vote(row["candidates"], outcomes, row["candidate_logprobs"], (programs, index),
                         verifier.cluster_labels(outcomes, index), verifier.barred_labels,
                         getattr(verifier, "representative", "logprob"))
    context.count(context.valid_count, vote.num_executable)
    return {
        **row,
        task.answer_field: vote.program or "",
        "votes": vote.votes,
        "num_candidates": vote.num_candidates,
        f"num_{verifier.outcome_word}": vote.num_executable,
        "num_distinct_results": vote.num_distinct_results,
        "logprob": vote.logprob,
        "candidate_status": [outcomes[i].status for i in index],
        "candidate_result": [outcomes[i].key for i in index],
        "winner_detail": outcomes[vote.winner].detail if vote.winner is not None else None,
    }


class _VerificationRequests:
    """Verification asked for by the question coroutines of :func:`vote_stream` (on the event
    loop's thread) and served in batches by the thread that reads the stream, so that one thread
    drives the verifier's workers. A wake-up (:meth:`wake`) ends a wait without a request."""

    def __init__(self) -> None:
        self._queue: queue.Queue = queue.Queue()

    async def execute(self, verifier_context: Any, programs: list[str]) -> list[ExecutionResult]:
        future: concurrent.futures.Future = concurrent.futures.Future()
        self._queue.put((verifier_context, programs, future))
        return await asyncio.wrap_future(future)

    def wake(self) -> None:
        self._queue.put(None)

    def serve(self, verifier: Verifier) -> None:
        """Wait for a request or a wake-up, then run every request waiting as one stream."""
        items = [self._queue.get()]
        while True:
            try:
                items.append(self._queue.get_nowait())
            except queue.Empty:
                break
        jobs = [item for item in items if item is not None and item[2].set_running_or_notify_cancel()]
        if not jobs:
            return
        try:
            results = list(verifier.execute_stream((context, programs) for context, programs, _ in jobs))
        except BaseException as error:
            for _, _, future in jobs:
                future.set_exception(error)
            raise
        for (_, _, future), outcomes in zip(jobs, results):
            future.set_result(outcomes)


async def _answer_in_rounds(context: StageContext, row: dict, verification: _VerificationRequests,
                            completion_estimate: float) -> dict:
    """One question under adaptive voting: sample its candidates in rounds (sizes from
    :func:`~symgen_datasets.pipeline.voting.round_size`; candidate ``i`` keeps the seed it has
    under fixed sampling), verify each new distinct program, and stop once
    :func:`~symgen_datasets.pipeline.voting.settled`. Returns the row with its answer and
    :func:`verify_columns`."""
    from .voting import round_size, settled, tally

    task, generator, verifier = context.task, context.generator, context.verifier
    requests = _answer_requests(context, row["question_index"], row)
    prompt, params, seeds = requests[0]
    # clusters that depend on each other (fuzzy agreement) are only final once all K are in
    rule = context.sampling if getattr(verifier, "stable_labels", True) else "all"
    auxiliary = asyncio.ensure_future(generator.sample(*requests[1])) if len(requests) > 1 else None
    completions: list[Completion] = []
    aux_completions: list[Completion] = []
    known: dict[str, ExecutionResult] = {}
    verifier_context, clusters, parsed, programs, index, outcomes = None, [], [], [], [], []
    prompt_estimate = generator.count_tokens(prompt)
    try:
        while True:
            # n > 1 on a server, a batch in process: a round pays its prompt once (else every candidate pays it)
            per_request = prompt_estimate if generator.n_supported else 0
            measured = [c.completion_tokens for c in completions if c.completion_tokens]
            size = round_size(clusters, len(completions), context.num_samples, context.min_votes, rule, context.confidence,
                              per_request, sum(measured) / len(measured) if measured else completion_estimate)
            if size <= 0:
                break
            new = await generator.sample(prompt, params, seeds[len(completions):len(completions) + size])
            completions += new
            prompt_estimate = max([c.prompt_tokens for c in completions] + [0]) or prompt_estimate
            if auxiliary is not None:
                aux_completions = await auxiliary
                auxiliary = None
            parsed += [task.parse_answer(c.text, row) or "" for c in new]
            programs, index = distinct_programs(parsed, verifier.normalize)
            missing = [program for program in programs if program and program not in known]
            if missing:
                if verifier_context is None:
                    aux_columns = task.parse_auxiliary(row, [c.text for c in aux_completions]) if len(requests) > 1 else {}
                    verifier_context = verifier.context({**row, **aux_columns, "candidates": parsed})
                known.update(zip(missing, await verification.execute(verifier_context, missing)))
            outcomes = [known[program] if program else UNPARSED for program in programs]
            clusters = tally(outcomes, index, verifier.cluster_labels(outcomes, index), verifier.barred_labels)
            if settled(clusters, len(completions), context.num_samples, context.min_votes, rule, context.confidence):
                break
    finally:
        if auxiliary is not None:
            auxiliary.cancel()
    answered = {**row, **_answer_columns(context, row, [completions, aux_completions] if len(requests) > 1 else [completions])}
    return _voted_row(context, answered, programs, index, outcomes)  # the last round's: all the candidates


def vote_stream(context: StageContext, rows: Iterable[dict], window: int) -> Iterator[dict]:
    """Answer generation, verification and the vote together, each question sampled in rounds
    until its outcome is settled (``--sampling exact`` or ``adaptive``; see
    :mod:`~symgen_datasets.pipeline.voting`).

    Up to ``window`` questions are in flight at once, each a coroutine on the generator's event
    loop; their verification is run in batches by the thread reading this stream. Rows come out
    in order, as from :func:`answer_stream` followed by :func:`verify_stream`, with
    ``candidates`` holding the candidates sampled (K at most). A resumed run asks the same
    rounds: a round's size depends only on the question's own earlier responses (stored in the
    response cache) and on the backend.

    Raises:
        GenerationError: a request failed for good; the questions in flight are cancelled.
        BudgetExhausted: ``--max-requests`` or ``--max-tokens-billed`` was reached; the
            requests in flight finish (and are stored) first.
    """
    task, loop, generator = context.task, context.loop, context.generator
    answers = [generator.count_tokens(d.get(task.answer_field) or "") for d in context.demonstrations]
    completion_estimate = max(1.0, sum(answers) / len(answers)) if answers else 32.0
    verification = _VerificationRequests()
    pending: deque[concurrent.futures.Future] = deque()
    rows = iter(rows)
    more = True
    stopped: BudgetExhausted | None = None
    try:
        while True:
            while more and stopped is None and len(pending) < window:
                row = next(rows, None)
                if row is None:
                    more = False
                    break
                future = loop.submit(_answer_in_rounds(context, row, verification, completion_estimate))
                future.add_done_callback(lambda _: verification.wake())
                pending.append(future)
            if not pending:
                break
            if pending[0].done():
                try:
                    answered = pending.popleft().result()
                except BudgetExhausted as error:
                    stopped = stopped or error
                    continue
                if stopped is None:
                    yield answered
                continue
            verification.serve(context.verifier)
        if stopped is not None:
            raise stopped
    finally:
        for future in pending:
            future.cancel()
        concurrent.futures.wait(pending)


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
