"""text-generation-inference (TGI) native API backend, through huggingface_hub's
:class:`~huggingface_hub.AsyncInferenceClient` (``POST /generate`` semantics with ``details``
for token log-probabilities)."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request

from huggingface_hub import AsyncInferenceClient

from .base import Completion, RemoteGenerator, RetryPolicy, SamplingParams


class TGIGenerator(RemoteGenerator):
    """Samples from a TGI server's native API.

    Args:
        url: the server's root URL, e.g. ``http://localhost:8080``.
        concurrency: requests in flight at most.
        retry: the :class:`RetryPolicy` for 429/5xx/connection errors.
        timeout_s: per-request timeout in seconds.

    Each request carries ``seed`` and ``details=True``; the completion's ``mean_logprob`` is the
    mean of the generated tokens' ``logprob``.
    """

    def __init__(self, url: str, concurrency: int = 16, retry: RetryPolicy | None = None, timeout_s: float = 120.0):
        super().__init__(concurrency, retry)
        self.url = url.rstrip("/")
        self.spec = f"tgi:{self.url}"
        self.model = ""  # filled from GET /info by check()
        self._client = AsyncInferenceClient(model=self.url, timeout=timeout_s)

    async def _request(self, prompt: str, params: SamplingParams, seed: int) -> Completion:
        sampling = params.temperature > 0
        output = await self._client.text_generation(
            prompt,
            details=True,
            max_new_tokens=params.max_new_tokens,
            do_sample=sampling,
            temperature=params.temperature if sampling else None,
            seed=seed,
            stop=list(params.stop) or None,
            return_full_text=False,
        )
        tokens = output.details.tokens if output.details else []
        logprobs = [t.logprob for t in tokens if t.logprob is not None]
        mean = sum(logprobs) / len(logprobs) if logprobs else None
        return Completion(output.generated_text, mean)

    def _server_info(self) -> dict:
        """TGI's ``GET /info`` (``model_id``, ``model_sha``, ...), or ``{}`` if the server has none."""
        try:
            with urllib.request.urlopen(f"{self.url}/info", timeout=10) as response:
                info = json.load(response)
                return info if isinstance(info, dict) else {}
        except (urllib.error.URLError, OSError, ValueError):
            return {}

    async def check(self) -> None:
        """Send one 1-token request (retried as any other), then read the model id and revision."""
        self.refuse_offline_mode()
        await self._request_with_retries("Hello", SamplingParams(0.0, 1), 0)
        info = await asyncio.to_thread(self._server_info)
        self.model = str(info.get("model_id") or "")
        self.model_revision = str(info.get("model_sha") or "")

    async def aclose(self) -> None:
        await self._client.close()
