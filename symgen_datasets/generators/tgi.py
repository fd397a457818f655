"""text-generation-inference (TGI) native API backend: ``POST /generate`` with ``details`` for
token log-probabilities, ``GET /info`` for the model id and revision."""

from __future__ import annotations

from typing import Sequence
from urllib.parse import urlparse

from ..errors import GenerationError
from .base import Completion, RemoteGenerator, RetryPolicy, SamplingParams, mean_logprob


class TGIGenerator(RemoteGenerator):
    """Samples from one or more TGI servers' native API (``POST {url}/generate``).

    Args:
        urls: the servers' root URLs, e.g. ``http://localhost:8080``; requests are spread over
            them (they must serve the same model).
        concurrency: requests in flight at most (all servers together).
        retry: the :class:`RetryPolicy` for 429/5xx/connection errors.
        timeout_s: per-request timeout in seconds.

    Each request carries ``seed`` and ``details=true``; the completion's ``mean_logprob`` is the
    mean of the generated tokens' ``logprob``. The Hugging Face token (``HF_TOKEN`` or the
    stored login) is sent only to Inference Endpoints (``*.huggingface.cloud``).
    """

    backend = "tgi"

    def __init__(self, urls: str | Sequence[str], concurrency: int = 16, retry: RetryPolicy | None = None,
                 timeout_s: float = 120.0):
        super().__init__(urls, concurrency, retry, timeout_s)
        self.model = ""  # filled from GET /info by check()

    def _headers(self, url: str) -> dict[str, str]:
        if (urlparse(url).hostname or "").endswith(".huggingface.cloud"):
            from huggingface_hub import get_token

            token = get_token()
            return {"Authorization": f"Bearer {token}"} if token else {}
        return {}

    async def _request(self, prompt: str, params: SamplingParams, seed: int) -> Completion:
        sampling = params.temperature > 0
        parameters = {
            "details": True,
            "max_new_tokens": params.max_new_tokens,
            "do_sample": sampling,
            "seed": seed,
            "return_full_text": False,
        }
        if sampling:
            parameters["temperature"] = params.temperature
        if params.stop:
            parameters["stop"] = list(params.stop)
        output = await self._post_json("/generate", {"inputs": prompt, "parameters": parameters})
        try:
            details = output.get("details") or {}
            logprobs = [token.get("logprob") for token in details.get("tokens") or []]
            return Completion(output["generated_text"], mean_logprob(logprobs))
        except (AttributeError, KeyError, TypeError):
            raise GenerationError(
                f"{self.spec}: not a TGI /generate answer ({str(output)[:200]}); is this a TGI server? "
                "For an OpenAI-compatible server use --generator openai:URL"
            ) from None

    async def check(self) -> None:
        """Send one 1-token request (retried as any other), then read each server's ``GET /info``
        (``model_id``, ``model_sha``).

        Raises:
            GenerationError: a server cannot be reached, or the servers serve different models.
        """
        await self._request_with_retries("Hello", SamplingParams(0.0, 1), 0)
        infos = [info if isinstance(info, dict) else {} for info in await self._get_json_everywhere("/info")]
        served = {(str(info.get("model_id") or ""), str(info.get("model_sha") or "")) for info in infos}
        if len(served) > 1:
            listing = "; ".join(f"{url}: {info.get('model_id')}@{info.get('model_sha')}" for url, info in zip(self.urls, infos))
            raise GenerationError(f"{self.spec}: the servers serve different models ({listing}); give servers of one model")
        self.model, self.model_revision = served.pop()
