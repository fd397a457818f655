"""text-generation-inference (TGI) native API backend: ``POST /generate`` with ``details`` for
token log-probabilities, ``GET /info`` for the model id and revision."""

from __future__ import annotations

from typing import Sequence
from urllib.parse import urlparse

from ..errors import GenerationError
from .base import REQUEST_TIMEOUT_S, Completion, RemoteGenerator, RetryPolicy, SamplingParams, logger, mean_logprob


class TGIGenerator(RemoteGenerator):
    """Samples from one or more TGI servers' native API (``POST {url}/generate``).

    Args:
        urls: the servers' root URLs, e.g. ``http://localhost:8080``; requests are spread over
            them (they must serve the same model).
        concurrency: requests in flight at most (all servers together).
        retry: the :class:`RetryPolicy` for 429/5xx/connection errors and timeouts.
        timeout_s: time limit of one request attempt in seconds (``--request-timeout``).

    Each request carries ``seed`` and ``details=true``; the completion's ``mean_logprob`` is the
    mean of the generated tokens' ``logprob``. The Hugging Face token (``HF_TOKEN`` or the
    stored login) is sent only to Inference Endpoints (``*.huggingface.cloud``). The model id,
    revision and context length come from ``GET /info`` (:meth:`connect`).
    """

    backend = "tgi"

    def __init__(self, urls: str | Sequence[str], concurrency: int = 16, retry: RetryPolicy | None = None,
                 timeout_s: float = REQUEST_TIMEOUT_S):
        super().__init__(urls, concurrency, retry, timeout_s)
        self.model = ""  # filled from GET /info by connect()
        self._max_input_tokens: int | None = None
        self._max_total_tokens: int | None = None

    def _headers(self, url: str) -> dict[str, str]:
        if (urlparse(url).hostname or "").endswith(".huggingface.cloud"):
            from huggingface_hub import get_token

            token = get_token()
            if token:
                self._secrets.add(token)
                return {"Authorization": f"Bearer {token}"}
        return {}

    def max_prompt_tokens(self, max_new_tokens: int) -> int | None:
        """From ``GET /info``: ``max_input_tokens`` (``max_input_length`` before TGI 2) and
        ``max_total_tokens`` minus ``max_new_tokens``, the smaller of the two (``None`` when the
        servers report neither)."""
        limits = [self._max_input_tokens]
        if self._max_total_tokens is not None:
            limits.append(self._max_total_tokens - max_new_tokens)
        known = [limit for limit in limits if limit is not None]
        return min(known) if known else None

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
            generated = details.get("generated_tokens")
            text = output["generated_text"]
            # TGI's /generate reports no prompt tokens: the tokenizer's count (an estimate)
            return Completion(text, mean_logprob(logprobs), self.count_tokens(prompt),
                              generated if isinstance(generated, int) else self.count_tokens(text))
        except (AttributeError, KeyError, TypeError):
            raise GenerationError(
                f"{self.spec}: not a TGI /generate answer ({str(output)[:200]}); is this a TGI server? "
                "For an OpenAI-compatible server use --generator openai:URL"
            ) from None

    async def _describe(self) -> None:
        """Read each server's ``GET /info`` (retried as any request): ``model_id``,
        ``model_sha`` and the context limits (the smallest over the servers). A server that
        reports no ``model_id`` is named in a warning: the dataset then records no model.

        Raises:
            GenerationError: a server cannot be reached, or the servers serve different models.
        """
        infos = [info if isinstance(info, dict) else {} for info in await self._get_json_everywhere("/info")]
        served = {(str(info.get("model_id") or ""), str(info.get("model_sha") or "")) for info in infos}
        if len(served) > 1:
            listing = "; ".join(f"{url}: {info.get('model_id')}@{info.get('model_sha')}" for url, info in zip(self.shown_urls, infos))
            raise GenerationError(f"{self.spec}: the servers serve different models ({listing}); give servers of one model")
        self.model, self.model_revision = served.pop()
        if not self.model:
            logger.warning(
                "%s: GET /info reported no model_id; the dataset card and rows will name no model "
                "(responses are cached under the server's spec instead)", self.spec,
            )
        self._max_input_tokens = _smallest(infos, "max_input_tokens", "max_input_length")
        self._max_total_tokens = _smallest(infos, "max_total_tokens")


def _smallest(infos: list[dict], *names: str) -> int | None:
    """The smallest positive integer any of ``infos`` gives under the first of ``names`` it has."""
    values = []
    for info in infos:
        for name in names:
            if isinstance(info.get(name), int) and info[name] > 0:
                values.append(info[name])
                break
    return min(values) if values else None
