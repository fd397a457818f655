"""OpenAI-compatible chat completions backend (vLLM, SGLang, TGI's Messages API, llama.cpp's
server, OpenAI): ``POST /v1/chat/completions`` with ``logprobs``, ``GET /v1/models``."""

from __future__ import annotations

import asyncio
import dataclasses
import os
from typing import Sequence
from urllib.parse import urlsplit, urlunsplit

from ..errors import GenerationError
from .base import (REQUEST_TIMEOUT_S, Completion, HTTPStatusError, RemoteGenerator, RetryPolicy, SamplingParams,
                   logger, mean_logprob)

#: Samples one request asks for at most (OpenAI's and vLLM's limit is 128).
MAX_N = 128


class OpenAIGenerator(RemoteGenerator):
    """Samples from ``POST {url}/v1/chat/completions``; the prompt is sent as one user message.

    Args:
        urls: the servers' base URLs (with or without ``/v1``); requests are spread over them.
        model: the model name to request; ``None`` asks ``GET {url}/v1/models`` for the first one.
        api_key: the bearer token; default ``$OPENAI_API_KEY`` (never printed or stored: masked
            in any message, like credentials in the URLs).
        concurrency, retry, timeout_s: as in :class:`~symgen_datasets.generators.tgi.TGIGenerator`.

    A question's candidates come from requests with ``n`` > 1 where the server supports it (see
    :meth:`sample`). Requests carry ``seed`` and ``logprobs=true``; ``mean_logprob`` is the mean of the returned
    token log-probabilities (``None`` if the server returns none). The context length is known
    when ``GET /v1/models`` lists ``max_model_len`` (vLLM) and the model was not named in the
    spec (a named model skips that request).
    """

    backend = "openai"

    def __init__(
        self,
        urls: str | Sequence[str],
        model: str | None = None,
        api_key: str | None = None,
        concurrency: int = 16,
        retry: RetryPolicy | None = None,
        timeout_s: float = REQUEST_TIMEOUT_S,
    ):
        super().__init__(urls, concurrency, retry, timeout_s)
        self._api_key = api_key or os.environ.get("OPENAI_API_KEY") or ""
        self._secrets.add(self._api_key)
        self.model = model or ""
        self._max_model_len: int | None = None
        #: whether the server answers ``n`` > 1 with ``n`` choices (``None`` until a request tells)
        self.n_supported: bool | None = None

    @staticmethod
    def _base_url(url: str) -> str:
        """The server's URL without a trailing ``/`` or ``/v1`` on its path (query kept)."""
        parts = urlsplit(url.strip())
        return urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/").removesuffix("/v1"), parts.query, ""))

    @property
    def spec(self) -> str:  # type: ignore[override]
        servers = f"openai:{','.join(self.shown_urls)}"
        return f"{servers}#{self.model}" if self.model else servers

    def max_prompt_tokens(self, max_new_tokens: int) -> int | None:
        """``max_model_len`` from ``GET /v1/models`` minus ``max_new_tokens``, when known."""
        return self._max_model_len - max_new_tokens if self._max_model_len else None

    def _headers(self, url: str) -> dict[str, str]:
        """``Authorization: Bearer <key>`` (``EMPTY`` without a key, as vLLM expects), except
        for a URL with credentials of its own, which go as HTTP basic authentication."""
        if "@" in urlsplit(url).netloc:
            return {}
        return {"Authorization": f"Bearer {self._api_key or 'EMPTY'}"}

    async def sample(self, prompt: str, params: SamplingParams, seeds: Sequence[int]) -> list[Completion]:
        """``len(seeds)`` completions of ``prompt``: requests with ``n`` > 1 where the server
        takes it (one prompt, many samples: the prompt is prefilled and billed once), at most
        :data:`MAX_N` per request, each request seeded with its first seed (so a run with the
        same seeds asks the same requests). The first request tells whether the server supports
        ``n``: a server that answers with one choice (it ignored ``n``; that choice is the
        sample of the first seed) or refuses ``n`` (HTTP 400/422) gets one request per seed for
        the rest of the run, with a warning (:attr:`n_supported` says which).
        """
        if len(seeds) <= 1 or self.n_supported is False:
            return await super().sample(prompt, params, seeds)
        groups = [list(seeds[i : i + MAX_N]) for i in range(0, len(seeds), MAX_N)]
        parts = await asyncio.gather(*(self._sample_group(prompt, params, group) for group in groups))
        return [completion for part in parts for completion in part]

    async def check(self) -> None:
        """:meth:`connect`, then one 1-token request with ``n=2``, which also tells whether the
        server takes ``n`` (:attr:`n_supported`), so that every run, a resumed one included,
        knows it before its first generation request.

        Raises:
            GenerationError: a server cannot be reached or cannot generate.
        """
        await self.connect()
        if self.n_supported is not None:
            return await super().check()
        choices = await self._send_n("Hello", SamplingParams(0.0, 1), [0, 1])
        if choices is None:
            await super().check()  # it refused n: does it generate at all?
        self._learn_n(choices, 2)

    async def _send_n(self, prompt: str, params: SamplingParams, seeds: list[int]) -> list[Completion] | None:
        """One request for ``len(seeds)`` choices, seeded with the first seed (retried as any
        other); ``None`` when the server refuses ``n`` (HTTP 400/422) before support is known."""
        async def send() -> list[Completion] | None:
            async with self._semaphore_for_loop():
                try:
                    return await self._request_n(prompt, params, seeds[0], len(seeds))
                except HTTPStatusError as error:
                    if error.status in (400, 422) and self.n_supported is None:
                        return None
                    raise

        choices = await self._with_retries(send)
        if choices is not None:
            self.requests_sent += 1
        return choices

    def _learn_n(self, choices: list[Completion] | None, wanted: int) -> bool:
        """Whether ``choices`` (an answer of :meth:`_send_n`) holds the ``wanted`` choices; the
        first answer that tells sets :attr:`n_supported`, with a warning when the server ignores
        or refuses ``n``."""
        complete = choices is not None and len(choices) == wanted
        if complete:
            self.n_supported = True
        elif self.n_supported is None:
            self.n_supported = False
            logger.warning("%s: the server %s; sampling one request per candidate (the prompt is sent and billed once "
                           "per candidate)", self.spec,
                           "refuses n > 1" if choices is None else "ignores n > 1 (one choice per request)")
        return complete

    async def _sample_group(self, prompt: str, params: SamplingParams, seeds: list[int]) -> list[Completion]:
        choices = await self._send_n(prompt, params, seeds)
        if self._learn_n(choices, len(seeds)):
            return choices
        done = (choices or [])[:1]  # a server that ignored n answered the first seed's request
        return done + await super().sample(prompt, params, seeds[len(done):])

    async def _request_n(self, prompt: str, params: SamplingParams, seed: int, n: int) -> list[Completion]:
        payload = self._payload(prompt, params, seed)
        payload["n"] = n
        output = await self._post_json("/v1/chat/completions", payload)
        try:
            choices = sorted(output["choices"], key=lambda choice: choice.get("index", 0))
            completions = [self._completion(choice) for choice in choices]
            return self._billed(completions, output.get("usage"), prompt)
        except (AttributeError, IndexError, KeyError, TypeError):
            raise GenerationError(
                f"{self.spec}: not a chat completion ({str(output)[:200]}); is this an OpenAI-compatible server?"
            ) from None

    @staticmethod
    def _completion(choice: dict) -> Completion:
        content = (choice.get("logprobs") or {}).get("content") or []
        return Completion(choice["message"].get("content") or "", mean_logprob([t.get("logprob") for t in content]),
                          completion_tokens=len(content))

    def _billed(self, completions: list[Completion], usage: dict | None, prompt: str) -> list[Completion]:
        """``completions`` with the request's bill: the server's ``usage`` (prompt tokens once, on
        the first; completion tokens per choice from its token log-probabilities, else the total
        shared out), or the tokenizer's count where the server gives none."""
        usage = usage if isinstance(usage, dict) else {}
        prompt_tokens = usage.get("prompt_tokens")
        prompt_tokens = prompt_tokens if isinstance(prompt_tokens, int) else self.count_tokens(prompt)
        total = usage.get("completion_tokens")
        counted = [c.completion_tokens or 0 for c in completions]
        if isinstance(total, int) and (sum(counted) != total or not all(counted)):
            share, extra = divmod(total, max(1, len(completions)))
            counted = [share + (1 if i < extra else 0) for i in range(len(completions))]
        elif not all(counted):
            counted = [self.count_tokens(c.text) for c in completions]
        return [dataclasses.replace(c, prompt_tokens=prompt_tokens if i == 0 else 0, completion_tokens=counted[i])
                for i, c in enumerate(completions)]

    def _payload(self, prompt: str, params: SamplingParams, seed: int) -> dict:
        payload = {
            "model": self.model,
            "messages": [{"role": "user", "content": prompt}],
            "max_tokens": params.max_new_tokens,
            "temperature": params.temperature,
            "seed": seed,
            "logprobs": True,
        }
        if params.stop:
            payload["stop"] = list(params.stop)
        return payload

    async def _request(self, prompt: str, params: SamplingParams, seed: int) -> Completion:
        output = await self._post_json("/v1/chat/completions", self._payload(prompt, params, seed))
        try:
            return self._billed([self._completion(output["choices"][0])], output.get("usage"), prompt)[0]
        except (AttributeError, IndexError, KeyError, TypeError):
            raise GenerationError(
                f"{self.spec}: not a chat completion ({str(output)[:200]}); is this an OpenAI-compatible server?"
            ) from None

    async def _describe(self) -> None:
        """Find the model name if none was given: the first model of ``GET /v1/models`` on the
        first server (and its ``max_model_len``, when listed).

        Raises:
            GenerationError: a server cannot be reached or lists no model.
        """
        if self.model:
            return
        listing = (await self._get_json_everywhere("/v1/models"))[0]
        models = (listing or {}).get("data") or [] if isinstance(listing, dict) else []
        if not models or not isinstance(models[0], dict) or not models[0].get("id"):
            raise GenerationError(f"{self.spec}: the server lists no model; use openai:URL#MODEL")
        self.model = str(models[0]["id"])
        length = models[0].get("max_model_len")
        self._max_model_len = length if isinstance(length, int) and length > 0 else None
