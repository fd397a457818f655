"""The generator interface shared by every LLM backend, with bounded concurrency and retries."""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import logging
import math
import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Coroutine, Sequence, TypeVar
from urllib.parse import urlsplit, urlunsplit

import tenacity

from ..errors import BudgetExhausted, GenerationError, InputError
from ..redaction import redact_url, scrub, url_secrets

T = TypeVar("T")
logger = logging.getLogger("symgen_datasets.generators")

#: Default time limit of one request attempt (seconds), ``--request-timeout``.
REQUEST_TIMEOUT_S = 120.0


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
        prompt_tokens: prompt tokens the request that returned it was billed for, on the first
            completion of a request only (0 on the others: a prompt is billed once per request);
            the server's ``usage`` or, where it gives none, the tokenizer's count.
        completion_tokens: the tokens generated for this completion.
    """

    text: str
    mean_logprob: float | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0


def mean_logprob(logprobs: Sequence[float | None]) -> float | None:
    """The mean of the known token log-probabilities, or ``None`` when there is none."""
    known = [value for value in logprobs if value is not None]
    return sum(known) / len(known) if known else None


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
        initial_wait_s, max_wait_s: exponential backoff with jitter between these (seconds).
        max_retry_after_s: a ``Retry-After`` header, when present, is honoured instead of the
            backoff, up to this many seconds (so a server that says "come back in an hour" still
            gives a bounded wait).
    """

    max_attempts: int = 6
    initial_wait_s: float = 0.5
    max_wait_s: float = 30.0
    max_retry_after_s: float = 120.0


class Generator(ABC):
    """An LLM backend that samples completions for prompts.

    Subclasses set :attr:`spec` (the ``--generator`` spec, without secrets), :attr:`backend` and
    :attr:`model` (the model's name or path) and implement :meth:`sample`.
    """

    spec: str
    model: str
    #: the kind of backend (``tgi``, ``openai``, ``transformers``, ``embedded``).
    backend: str = ""
    #: retried requests so far (remote backends), for the run summary.
    retries: int = 0
    #: requests this backend serves at once (in-process backends run one at a time).
    concurrency: int = 1
    #: the model's revision (commit or package version) when the backend reports it.
    model_revision: str = ""
    #: whether one request returns several samples of a prompt (``n`` > 1): ``True``/``False``
    #: once a request told, ``None`` where it does not apply or is not known yet.
    n_supported: bool | None = None
    #: generation requests answered so far (remote backends; one request may return several samples).
    requests_sent: int = 0

    @abstractmethod
    async def sample(self, prompt: str, params: SamplingParams, seeds: Sequence[int]) -> list[Completion]:
        """Sample ``len(seeds)`` completions of ``prompt``, the i-th seeded with ``seeds[i]``.

        Raises:
            GenerationError: the backend failed for good (after retries).
        """

    @property
    def provenance(self) -> str:
        """``backend (model)`` as recorded in each row (the same whichever servers answered), or
        the spec when the model is unknown."""
        return f"{self.backend} ({self.model})" if self.model and self.backend else self.spec

    @property
    def identity(self) -> str:
        """What answers a seeded request: backend, model and revision (not the server URLs, so a
        run resumed against other servers of the same model reuses its stored responses)."""
        return f"{self.backend}|{self.model}|{self.model_revision}" if self.model else self.spec

    def count_tokens(self, text: str) -> int:
        """Tokens in ``text``; backends without a local tokenizer estimate 1 token per 3.5
        characters (a conservative figure for English and SQL with BPE tokenizers)."""
        return math.ceil(len(text) / 3.5)

    def max_prompt_tokens(self, max_new_tokens: int) -> int | None:
        """The most prompt tokens a request that generates up to ``max_new_tokens`` tokens may
        carry (the model's context), or ``None`` when the backend does not say. Known after
        :meth:`connect`."""
        return None

    async def connect(self) -> None:
        """Learn what the backend serves (model, revision, context length) without generating
        anything; a no-op for in-process backends.

        Raises:
            GenerationError: the backend cannot be reached.
        """

    async def check(self) -> None:
        """Fail fast with :class:`GenerationError` when the backend cannot generate (one
        1-token request for remote backends)."""

    async def aclose(self) -> None:
        """Release connections or memory."""


class HTTPStatusError(Exception):
    """A server answered with a non-2xx status.

    Attributes:
        url: the request's URL; status: the HTTP status; message: the start of the body;
        retry_after: the ``Retry-After`` header in seconds, when the server sent one.
    """

    def __init__(self, url: str, status: int, message: str, retry_after: float | None = None):
        super().__init__(f"{message} ({url})" if message else url)
        self.url, self.status, self.message, self.retry_after = url, status, message, retry_after


class RemoteGenerator(Generator):
    """A backend behind HTTP: one request per sample, at most ``concurrency`` in flight, each
    attempt limited to ``timeout_s`` seconds and retried under ``retry`` on 429/5xx/connection
    errors and timeouts; other errors fail at once. Each retry is reported (logger
    ``symgen_datasets.generators``, level WARNING: the server, the error and the attempt; at
    most one line per server every :attr:`report_every_s` seconds, with a count of the others).

    Requests are spread over ``urls`` (servers that serve the same model): each goes to the
    server with the fewest requests in flight, ties in turn, so a slow server gets less work. A
    server whose request failed with a retryable error is avoided for a while (0.5 s, doubling
    with each failure in a row, at most 30 s) while another is available, so the retry of a
    request to a dead server goes to a live one.

    URLs may carry credentials (``http://user:password@host``, sent as HTTP basic
    authentication) and query parameters (``?api_key=...``, sent with every request). They are
    never shown: :attr:`spec`, error messages and retry notices use the redacted form
    (:func:`~symgen_datasets.redaction.redact_url`), and any secret a server echoes in an error
    body is masked.

    HTTP is spoken with one pooled :class:`aiohttp.ClientSession` per run. huggingface_hub's
    ``AsyncInferenceClient`` was used before: its httpx connection pool scans every connection
    for each request and cost 1.3-1.5 ms of client CPU per request at 64 in flight (aiohttp:
    0.3 ms), which held the client under 91% of a server's capacity
    (``benchmarks/generation_client.py``).

    Subclasses set :attr:`backend` and implement :meth:`_request` with :meth:`_post_json`.
    """

    #: the protocol (``tgi``, ``openai``), part of the spec and of the response-cache key.
    backend: str = ""
    #: a server's retries are reported at most once per this many seconds.
    report_every_s: float = 2.0

    def __init__(self, urls: str | Sequence[str], concurrency: int = 16, retry: RetryPolicy | None = None,
                 timeout_s: float = REQUEST_TIMEOUT_S):
        urls = [urls] if isinstance(urls, str) else list(urls)
        if not urls:
            raise InputError(f"--generator {self.backend}: give at least one server URL")
        self.urls = [self._base_url(url) for url in urls]
        self.concurrency = concurrency
        self.retry = retry or RetryPolicy()
        self.timeout_s = timeout_s
        #: requests answered by each server (aligned with :attr:`urls`).
        self.served = [0] * len(self.urls)
        self._in_flight = [0] * len(self.urls)
        self._failures = [0] * len(self.urls)
        self._avoid_until = [0.0] * len(self.urls)
        self._reported = [(float("-inf"), 0)] * len(self.urls)  # (last notice, retries not shown since)
        self._turn = 0
        self._semaphore: asyncio.Semaphore | None = None
        self._session = None
        self._connected = False
        self._secrets = {secret for url in urls for secret in url_secrets(url)}

    @staticmethod
    def _base_url(url: str) -> str:
        """The server's URL without a trailing ``/`` on its path (query parameters kept)."""
        parts = urlsplit(url.strip())
        return urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/"), parts.query, ""))

    def _endpoint(self, server: int, path: str) -> str:
        """The URL of ``path`` on server number ``server``: the path appended to the server's
        own, its query parameters kept."""
        parts = urlsplit(self.urls[server])
        return urlunsplit((parts.scheme, parts.netloc, parts.path + path, parts.query, ""))

    @property
    def spec(self) -> str:  # type: ignore[override]
        return f"{self.backend}:{','.join(self.shown_urls)}"

    @property
    def shown_urls(self) -> list[str]:
        """:attr:`urls` as they may be shown or stored: credentials and query values masked."""
        return [redact_url(url) for url in self.urls]

    def _scrub(self, text: str) -> str:
        """``text`` with every credential of the servers (and the backend's key) masked."""
        return scrub(text, self._secrets)

    @abstractmethod
    async def _request(self, prompt: str, params: SamplingParams, seed: int) -> Completion:
        """Send one request (with :meth:`_post_json`); raise on failure."""

    @abstractmethod
    async def _describe(self) -> None:
        """Ask the servers what they serve (model, revision, limits); raise on failure."""

    async def connect(self) -> None:
        """Ask the servers what they serve, once (:meth:`_describe`); no generation request.

        Raises:
            GenerationError: a server cannot be reached (after retries) or answers nonsense.
        """
        if not self._connected:
            await self._describe()
            self._connected = True

    async def check(self) -> None:
        """:meth:`connect`, then send one 1-token request (retried as any other).

        Raises:
            GenerationError: a server cannot be reached or cannot generate.
        """
        await self.connect()
        await self._request_with_retries("Hello", SamplingParams(0.0, 1), 0)

    def _headers(self, url: str) -> dict[str, str]:
        """Extra request headers for ``url`` (authorization)."""
        return {}

    def _client(self):
        if self._session is None:
            import aiohttp

            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self.concurrency, limit_per_host=0),
                timeout=aiohttp.ClientTimeout(total=self.timeout_s),
            )
        return self._session

    def _pick_server(self) -> int:
        """The server with the fewest requests in flight among those not avoided (all of them if
        every one is); ties go to each server in turn."""
        count = len(self.urls)
        self._turn = (self._turn + 1) % count
        now = time.monotonic()
        order = [(self._turn + i) % count for i in range(count)]
        available = [i for i in order if self._avoid_until[i] <= now]
        if not available:
            return min(order, key=self._avoid_until.__getitem__)
        return min(available, key=self._in_flight.__getitem__)

    def _record(self, server: int, error: BaseException | None) -> None:
        if error is None:
            self._failures[server] = 0
            self.served[server] += 1
        elif self._retryable(error):
            self._failures[server] += 1
            self._avoid_until[server] = time.monotonic() + min(0.5 * 2 ** (self._failures[server] - 1), 30.0)

    async def _send_json(self, method: str, server: int, path: str, payload: Any = None) -> Any:
        """Send one request to ``path`` on server number ``server``; its parsed JSON answer.

        Raises:
            HTTPStatusError: a non-2xx answer; aiohttp's errors on connection failures;
            :class:`asyncio.TimeoutError` past :attr:`timeout_s`. Each carries the server's
            number as ``error.server``.
        """
        url = self._endpoint(server, path)
        try:
            async with self._client().request(method, url, json=payload, headers=self._headers(url)) as response:
                if response.status >= 400:
                    text = (await response.text())[:300].strip()
                    header = response.headers.get("Retry-After")
                    try:
                        retry_after = float(header) if header else None
                    except ValueError:
                        retry_after = None
                    raise HTTPStatusError(redact_url(url), response.status, text, retry_after)
                return await response.json(content_type=None)
        except Exception as error:
            error.server = server  # type: ignore[attr-defined]  # for the retry notice
            raise

    async def _post_json(self, path: str, payload: dict) -> Any:
        """POST ``payload`` as JSON to ``path`` on the least busy server; the parsed JSON answer.

        Raises:
            HTTPStatusError: a non-2xx answer; aiohttp's errors on connection failures.
        """
        server = self._pick_server()
        self._in_flight[server] += 1
        try:
            answer = await self._send_json("POST", server, path, payload)
        except BaseException as error:
            self._record(server, error)
            raise
        finally:
            self._in_flight[server] -= 1
        self._record(server, None)
        return answer

    async def _get_json_everywhere(self, path: str) -> list[Any]:
        """GET ``path`` from every server (retried as requests are); their JSON answers."""
        async def get(server: int) -> Any:
            return await self._with_retries(lambda: self._send_json("GET", server, path))

        return list(await asyncio.gather(*(get(server) for server in range(len(self.urls)))))

    def _retryable(self, error: BaseException) -> bool:
        if isinstance(error, HTTPStatusError):
            return error.status == 429 or error.status >= 500
        import aiohttp

        return isinstance(error, (OSError, asyncio.TimeoutError, aiohttp.ClientConnectionError, aiohttp.ClientPayloadError))

    def _wait(self, state: tenacity.RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome else None
        if isinstance(error, HTTPStatusError) and error.retry_after is not None:
            return min(error.retry_after, self.retry.max_retry_after_s)
        return tenacity.wait_exponential_jitter(
            multiplier=self.retry.initial_wait_s, max=self.retry.max_wait_s, jitter=self.retry.initial_wait_s
        )(state)

    def _explain(self, error: BaseException) -> str:
        """One line on a failed attempt, credentials masked."""
        if isinstance(error, HTTPStatusError):
            text = f"HTTP {error.status}: {str(error).splitlines()[0]}"
        elif isinstance(error, asyncio.TimeoutError):
            text = f"no answer within {self.timeout_s:g} s (--request-timeout)"
        else:
            first = str(error).strip().splitlines()[0] if str(error).strip() else ""
            text = f"{type(error).__name__}: {first}" if first else type(error).__name__
        return self._scrub(text)

    def _count_retry(self, state: tenacity.RetryCallState) -> None:
        """Count a retry and report it: at most one notice per server every
        :attr:`report_every_s` seconds, with how many retries were not shown since."""
        self.retries += 1
        error = state.outcome.exception() if state.outcome else None
        server = getattr(error, "server", None)
        if error is None or server is None:
            return
        now = time.monotonic()
        last, hidden = self._reported[server]
        if now - last < self.report_every_s:
            self._reported[server] = (last, hidden + 1)
            return
        self._reported[server] = (now, 0)
        wait = state.next_action.sleep if state.next_action else 0.0
        others = f" ({hidden} more retries since the last notice)" if hidden else ""
        logger.warning(
            "%s: retrying a request to %s (%s): attempt %d of %d in %.1f s%s",
            self.backend, self.shown_urls[server], self._explain(error), state.attempt_number + 1,
            self.retry.max_attempts, wait, others,
        )

    async def _with_retries(self, send: Callable[[], Awaitable[T]]) -> T:
        retrying = tenacity.AsyncRetrying(
            stop=tenacity.stop_after_attempt(self.retry.max_attempts),
            wait=self._wait,
            retry=tenacity.retry_if_exception(self._retryable),
            before_sleep=self._count_retry,
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    return await send()
        except GenerationError:
            raise
        except Exception as error:  # noqa: BLE001 - every failure becomes one clear message
            tries = "" if not self._retryable(error) else f" after {self.retry.max_attempts} attempts"
            raise GenerationError(
                f"{self.spec}: request failed{tries} ({self._explain(error)}); "
                "check that the server is up and the --generator spec is right"
            ) from None
        raise AssertionError("unreachable")

    async def _request_with_retries(self, prompt: str, params: SamplingParams, seed: int) -> Completion:
        async def send() -> Completion:
            async with self._semaphore_for_loop():
                return await self._request(prompt, params, seed)

        completion = await self._with_retries(send)
        self.requests_sent += 1
        return completion

    def _semaphore_for_loop(self) -> asyncio.Semaphore:
        if self._semaphore is None:
            self._semaphore = asyncio.Semaphore(self.concurrency)
        return self._semaphore

    async def sample(self, prompt: str, params: SamplingParams, seeds: Sequence[int]) -> list[Completion]:
        return list(await asyncio.gather(*(self._request_with_retries(prompt, params, s) for s in seeds)))

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


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

    def submit(self, coroutine: Coroutine[Any, Any, T]) -> "concurrent.futures.Future[T]":
        """Start ``coroutine`` on the loop; its future (cancelling it cancels the coroutine)."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop)

    def close(self) -> None:
        """Cancel the coroutines still running on the loop and wait for them (so that none is
        destroyed pending, e.g. after Ctrl-C), then stop the loop and its thread."""

        async def cancel_all() -> None:
            tasks = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        if self._thread.is_alive():
            try:
                asyncio.run_coroutine_threadsafe(cancel_all(), self.loop).result(timeout=30)
            except (concurrent.futures.TimeoutError, RuntimeError):
                pass
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout=5)
        if not self._thread.is_alive() and not self.loop.is_closed():
            self.loop.close()


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
