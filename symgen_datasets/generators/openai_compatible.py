"""OpenAI-compatible chat completions backend (vLLM, SGLang, TGI's Messages API, llama.cpp's
server, OpenAI): ``POST /v1/chat/completions`` with ``logprobs``, ``GET /v1/models``."""

from __future__ import annotations

import os
from typing import Sequence

from ..errors import GenerationError
from .base import Completion, RemoteGenerator, RetryPolicy, SamplingParams, mean_logprob


class OpenAIGenerator(RemoteGenerator):
    """Samples from ``POST {url}/v1/chat/completions``; the prompt is sent as one user message.

    Args:
        urls: the servers' base URLs (with or without ``/v1``); requests are spread over them.
        model: the model name to request; ``None`` asks ``GET {url}/v1/models`` for the first one.
        api_key: the bearer token; default ``$OPENAI_API_KEY`` (never printed or stored).
        concurrency, retry, timeout_s: as in :class:`~symgen_datasets.generators.tgi.TGIGenerator`.

    Requests carry ``seed`` and ``logprobs=true``; ``mean_logprob`` is the mean of the returned
    token log-probabilities (``None`` if the server returns none).
    """

    backend = "openai"

    def __init__(
        self,
        urls: str | Sequence[str],
        model: str | None = None,
        api_key: str | None = None,
        concurrency: int = 16,
        retry: RetryPolicy | None = None,
        timeout_s: float = 120.0,
    ):
        urls = [urls] if isinstance(urls, str) else list(urls)
        super().__init__([u.rstrip("/").removesuffix("/v1") for u in urls], concurrency, retry, timeout_s)
        self._api_key = api_key or os.environ.get("OPENAI_API_KEY") or "EMPTY"
        self.model = model or ""

    @property
    def spec(self) -> str:  # type: ignore[override]
        servers = f"openai:{','.join(self.urls)}"
        return f"{servers}#{self.model}" if self.model else servers

    def _headers(self, url: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._api_key}"}

    async def _request(self, prompt: str, params: SamplingParams, seed: int) -> Completion:
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
        output = await self._post_json("/v1/chat/completions", payload)
        try:
            choice = output["choices"][0]
            content = (choice.get("logprobs") or {}).get("content") or []
            return Completion(choice["message"].get("content") or "", mean_logprob([t.get("logprob") for t in content]))
        except (AttributeError, IndexError, KeyError, TypeError):
            raise GenerationError(
                f"{self.spec}: not a chat completion ({str(output)[:200]}); is this an OpenAI-compatible server?"
            ) from None

    async def check(self) -> None:
        """Find the model name if none was given (``GET /v1/models`` on the first server), then
        send one 1-token request.

        Raises:
            GenerationError: a server cannot be reached or lists no model.
        """
        if not self.model:
            listing = (await self._get_json_everywhere("/v1/models"))[0]
            models = (listing or {}).get("data") or [] if isinstance(listing, dict) else []
            if not models:
                raise GenerationError(f"{self.spec}: the server lists no model; use openai:URL#MODEL")
            self.model = models[0]["id"]
        await self._request_with_retries("Hello", SamplingParams(0.0, 1), 0)
