"""OpenAI-compatible chat completions backend (vLLM, SGLang, TGI's Messages API, llama.cpp's
server, OpenAI), through huggingface_hub's :class:`~huggingface_hub.AsyncInferenceClient`."""

from __future__ import annotations

import asyncio
import json
import os
import urllib.error
import urllib.request

from huggingface_hub import AsyncInferenceClient

from ..errors import GenerationError
from .base import Completion, RemoteGenerator, RetryPolicy, SamplingParams


class OpenAIGenerator(RemoteGenerator):
    """Samples from ``POST {url}/v1/chat/completions``; the prompt is sent as one user message.

    Args:
        url: the server's base URL (with or without ``/v1``).
        model: the model name to request; ``None`` asks ``GET {url}/v1/models`` for the first one.
        api_key: the bearer token; default ``$OPENAI_API_KEY`` (never printed or stored).
        concurrency, retry, timeout_s: as in :class:`~symgen_datasets.generators.tgi.TGIGenerator`.

    Requests carry ``seed`` and ``logprobs=true``; ``mean_logprob`` is the mean of the returned
    token log-probabilities (``None`` if the server returns none).
    """

    def __init__(
        self,
        url: str,
        model: str | None = None,
        api_key: str | None = None,
        concurrency: int = 16,
        retry: RetryPolicy | None = None,
        timeout_s: float = 120.0,
    ):
        super().__init__(concurrency, retry)
        self.url = url.rstrip("/")
        self.base = self.url[: -len("/v1")] if self.url.endswith("/v1") else self.url
        self._api_key = api_key or os.environ.get("OPENAI_API_KEY") or "EMPTY"
        self.model = model or ""
        self._timeout_s = timeout_s
        self._client = AsyncInferenceClient(base_url=self.url, api_key=self._api_key, timeout=timeout_s)

    @property
    def spec(self) -> str:  # type: ignore[override]
        return f"openai:{self.url}#{self.model}" if self.model else f"openai:{self.url}"

    def _first_model(self) -> str:
        request = urllib.request.Request(
            f"{self.base}/v1/models", headers={"Authorization": f"Bearer {self._api_key}"}
        )
        try:
            with urllib.request.urlopen(request, timeout=self._timeout_s) as response:
                models = json.load(response).get("data") or []
        except (urllib.error.URLError, OSError, ValueError) as error:
            raise GenerationError(
                f"openai:{self.url}: cannot list models at {self.base}/v1/models ({error}); "
                "is the server up? You can name the model as openai:URL#MODEL"
            ) from None
        if not models:
            raise GenerationError(f"openai:{self.url}: the server lists no model; use openai:URL#MODEL")
        return models[0]["id"]

    async def _request(self, prompt: str, params: SamplingParams, seed: int) -> Completion:
        output = await self._client.chat_completion(
            [{"role": "user", "content": prompt}],
            model=self.model,
            max_tokens=params.max_new_tokens,
            temperature=params.temperature,
            seed=seed,
            stop=list(params.stop) or None,
            logprobs=True,
        )
        choice = output.choices[0]
        content = choice.logprobs.content if choice.logprobs and choice.logprobs.content else []
        logprobs = [t.logprob for t in content if t.logprob is not None]
        mean = sum(logprobs) / len(logprobs) if logprobs else None
        return Completion(choice.message.content or "", mean)

    async def check(self) -> None:
        """Find the model name if none was given, then send one 1-token request."""
        self.refuse_offline_mode()
        if not self.model:
            self.model = await asyncio.to_thread(self._first_model)
        await self._request_with_retries("Hello", SamplingParams(0.0, 1), 0)

    async def aclose(self) -> None:
        await self._client.close()
