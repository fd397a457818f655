"""The generator interface shared by every LLM backend, with bounded concurrency and retries."""

from __future__ import annotations

import asyncio
import hashlib
import math
import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Coroutine, Sequence, TypeVar

import tenacity

from ..errors import GenerationError, InputError, SymgenError

T = TypeVar("T")


class BudgetExhausted(SymgenError):
    """``--max-requests`` was reached; the run stops cleanly and can be resumed."""


@dataclass(frozen=True)
class SamplingParams:
    """How to sample one completion.

    Attributes:
        temperature: sampling temperature (> 0 samples; 0 is greedy).
        max_new_tokens: generated tokens at most.
        stop: stop sequences; generation ends at the first one (it may appear in ``text``).
    """

    temperature: float
    max_new_tokens: int
    stop: tuple[str, ...] = ()


@dataclass(frozen=True)
class Completion:
    """One sampled completion.

    Attributes:
        text: the generated text (prompt excluded).
        mean_logprob: mean log-probability (natural log) of the generated tokens, or ``None``
            when the backend gives none.
    """

    text: str
    mean_logprob: float | None = None


def derive_seed(*parts: object) -> int:
    """A stable 31-bit seed from ``parts`` (e.g. the run seed, the stage, the question and sample
    indices), so that the same command sends the same seeded requests."""
    digest = hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


@dataclass(frozen=True)
class RetryPolicy:
    """Retries of a remote request on 429, 5xx and connection errors.

    Attributes:
        max_attempts: tries per request, the first included.
        initial_wait_s, max_wait_s: exponential backoff with jitter between these (seconds);
            a ``Retry-After`` header, when present, is honoured instead (capped at ``max_wait_s``).
    """

    max_attempts: int = 6
    initial_wait_s: float = 0.5
    max_wait_s: float = 30.0


class Generator(ABC):
    """An LLM backend that samples completions for prompts.

    Subclasses set :attr:`spec` (the ``--generator`` spec, without secrets) and :attr:`model`
    (the model's name or path) and implement :meth:`sample`.
    """

    spec: str
    model: str
    #: retried requests so far (remote backends), for the run summary.
    retries: int = 0
    #: requests this backend serves at once (in-process backends run one at a time).
    concurrency: int = 1
    #: the model's revision (commit or package version) when the backend reports it.
    model_revision: str = ""

    @abstractmethod
    async def sample(self, prompt: str, params: SamplingParams, seeds: Sequence[int]) -> list[Completion]:
        """Sample ``len(seeds)`` completions of ``prompt``, the i-th seeded with ``seeds[i]``.

        Raises:
            GenerationError: the backend failed for good (after retries).
        """

    @property
    def provenance(self) -> str:
        """``spec (model)`` as recorded in each row, or just the spec when the model is unknown."""
        return self.spec if self.model in (self.spec, "") else f"{self.spec} ({self.model})"

    def count_tokens(self, text: str) -> int:
        """Tokens in ``text``; backends without a local tokenizer estimate 1 token per 3.5
        characters (a conservative figure for English and SQL with BPE tokenizers)."""
        return math.ceil(len(text) / 3.5)

    async def check(self) -> None:
        """Fail fast with :class:`GenerationError` when the backend cannot be used."""

    async def aclose(self) -> None:
        """Release connections or memory."""


class RemoteGenerator(Generator):
    """A backend behind HTTP: one request per sample, at most ``concurrency`` in flight, each
    retried under ``retry`` on 429/5xx/connection errors; other errors fail at once."""

    def __init__(self, concurrency: int = 16, retry: RetryPolicy | None = None):
        self.concurrency = concurrency
        self.retry = retry or RetryPolicy()
        self._semaphore: asyncio.Semaphore | None = None

    @abstractmethod
    async def _request(self, prompt: str, params: SamplingParams, seed: int) -> Completion:
        """Send one request; raise the client's exception on failure."""

    @staticmethod
    def _response(error: BaseException | None):
        """The HTTP response behind a client error (huggingface_hub re-raises TGI errors with
        the HTTP error as their cause), or ``None``."""
        while error is not None:
            response = getattr(error, "response", None)
            if response is not None:
                return response
            error = error.__cause__
        return None

    def _status(self, error: BaseException) -> int | None:
        return getattr(self._response(error), "status_code", None)

    def _retryable(self, error: BaseException) -> bool:
        if type(error).__name__ == "OfflineModeIsEnabled":
            return False
        status = self._status(error)
        if status is not None:
            return status == 429 or status >= 500
        return isinstance(error, (OSError, asyncio.TimeoutError)) or type(error).__name__ in {
            "ConnectError", "ReadError", "WriteError", "RemoteProtocolError", "ReadTimeout",
            "ConnectTimeout", "PoolTimeout", "WriteTimeout", "InferenceTimeoutError",
            "ClientConnectionError", "ServerDisconnectedError", "ClientPayloadError",
        }

    def _wait(self, state: tenacity.RetryCallState) -> float:
        response = self._response(state.outcome.exception() if state.outcome else None)
        header = response.headers.get("retry-after") if response is not None else None
        if header:
            try:
                return min(float(header), self.retry.max_wait_s)
            except ValueError:
                pass
        return tenacity.wait_exponential_jitter(
            multiplier=self.retry.initial_wait_s, max=self.retry.max_wait_s, jitter=self.retry.initial_wait_s
        )(state)

    def _describe(self, error: BaseException) -> str:
        status = self._status(error)
        text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        return f"HTTP {status}: {text}" if status else f"{type(error).__name__}: {text}"

    async def _request_with_retries(self, prompt: str, params: SamplingParams, seed: int) -> Completion:
        def count_retry(state: tenacity.RetryCallState) -> None:
            self.retries += 1

        retrying = tenacity.AsyncRetrying(
            stop=tenacity.stop_after_attempt(self.retry.max_attempts),
            wait=self._wait,
            retry=tenacity.retry_if_exception(self._retryable),
            before_sleep=count_retry,
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    async with self._semaphore_for_loop():
                        return await self._request(prompt, params, seed)
        except Exception as error:  # noqa: BLE001 - every failure becomes one clear message
            tries = "" if not self._retryable(error) else f" after {self.retry.max_attempts} attempts"
            raise GenerationError(
                f"{self.spec}: request failed{tries} ({self._describe(error)}); "
                "check that the server is up and the --generator spec is right"
            ) from error
        raise AssertionError("unreachable")

    def refuse_offline_mode(self) -> None:
        """Raise :class:`InputError` when ``HF_HUB_OFFLINE`` is set: huggingface_hub's HTTP client,
        which talks to the server, then refuses every request, even to a local server."""
        from huggingface_hub import is_offline_mode

        if is_offline_mode():
            raise InputError(
                f"--generator {self.spec}: HF_HUB_OFFLINE is set, and huggingface_hub (whose client "
                "talks to the server) then refuses every HTTP request, even to a local server; unset "
                "HF_HUB_OFFLINE for this run (a remote generator needs no Hub access)"
            )

    def _semaphore_for_loop(self) -> asyncio.Semaphore:
        if self._semaphore is None:
            self._semaphore = asyncio.Semaphore(self.concurrency)
        return self._semaphore

    async def sample(self, prompt: str, params: SamplingParams, seeds: Sequence[int]) -> list[Completion]:
        return list(await asyncio.gather(*(self._request_with_retries(prompt, params, s) for s in seeds)))


class EventLoopThread:
    """A private asyncio event loop in a daemon thread, so that synchronous code (CLI, batched
    ``Dataset.map`` functions) can run coroutines on one loop for the whole run (HTTP clients
    are bound to the loop that created them)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="symgen-event-loop", daemon=True)
        self._thread.start()

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run ``coroutine`` on the loop and return its result (or raise its exception)."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result()

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)


async def sample_many(
    generator: Generator,
    requests: Sequence[tuple[str, SamplingParams, Sequence[int]]],
) -> list[list[Completion]]:
    """Run ``(prompt, params, seeds)`` requests concurrently (the generator bounds how many are
    in flight).

    Returns:
        The completions of each request, aligned with ``requests``.

    Raises:
        GenerationError: the first request that failed for good; the others are cancelled.
        BudgetExhausted: ``--max-requests`` was reached; admitted requests finish first.
    """

    tasks = [asyncio.ensure_future(generator.sample(*request)) for request in requests]
    try:
        return list(await asyncio.gather(*tasks))
    except BudgetExhausted:
        # a clean stop: requests already admitted finish (and are stored); the others stop at once
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
