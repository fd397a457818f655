"""How the in-process backends should sample K candidates of one prompt on the CPU.

The embedded model (SmolLM2-135M-Instruct, transformers, float32) answers a real GeoQuery-SQL
answer prompt (the task's 10 demonstrations, the schema) with K candidates, three ways, in this
process, each timed over the same prompts:

* ``shared KV cache`` (what ``TransformersGenerator`` does): the prompt is run once, its KV cache
  copied to the K sequences of one batched ``generate``;
* ``num_return_sequences``: ``generate(..., num_return_sequences=K)``, which expands the prompt
  to K rows before the first forward pass, so the prompt is encoded K times;
* ``one request per candidate``: K ``generate`` calls of one sequence (what a backend without
  batching would do).

Printed: seconds per prompt for each and the ratio to the shared KV cache.

Usage: python benchmarks/local_sampling.py [--num-samples 20] [--max-new-tokens 48] [--prompts 3]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from symgen_datasets.generators import SamplingParams  # noqa: E402
from symgen_datasets.generators.local import EmbeddedGenerator  # noqa: E402
from symgen_datasets.tasks import get_task  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-samples", type=int, default=20)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--prompts", type=int, default=3)
    args = parser.parse_args()
    import torch

    generator = EmbeddedGenerator()
    task = get_task("geoquery_sql")
    options = task.options_with_defaults({})
    knowledge = task.load_knowledge(options)
    demonstrations = task.load_demonstrations(None, 4000, None)
    dev = [json.loads(line) for line in task.references_path().read_text().splitlines()][:args.prompts]
    prompts = [task.answer_prompt(row, knowledge, demonstrations, generator.count_tokens,
                                  generator.max_prompt_tokens(args.max_new_tokens)) for row in dev]
    params = SamplingParams(0.8, args.max_new_tokens, ())
    k = args.num_samples
    tokenizer, lm = generator.tokenizer, generator.lm
    # every way generates exactly max_new_tokens tokens per sequence: the same work, whatever the samples
    original = lm.generate
    lm.generate = lambda *a, **kw: original(*a, **{**kw, "min_new_tokens": args.max_new_tokens})
    print(f"embedded model on {torch.get_num_threads()} CPU threads; {len(prompts)} GeoQuery-SQL answer prompts of "
          f"{sum(generator.count_tokens(p) for p in prompts) // len(prompts)} tokens; K={k}, up to {args.max_new_tokens} "
          "new tokens each (no stop sequence, so every way generates the same number of tokens)")

    def shared(prompt: str) -> None:
        generator._generate(prompt, params, list(range(k)))

    def return_sequences(prompt: str) -> None:
        inputs = tokenizer(prompt, return_tensors="pt")
        torch.manual_seed(0)
        with torch.inference_mode():
            lm.generate(**inputs, do_sample=True, temperature=0.8, top_p=None, top_k=None, num_return_sequences=k,
                        max_new_tokens=args.max_new_tokens, pad_token_id=tokenizer.pad_token_id)

    def one_by_one(prompt: str) -> None:
        for seed in range(k):
            generator._generate(prompt, params, [seed])

    ways = {"shared KV cache (used)": shared, "num_return_sequences": return_sequences,
            "one request per candidate": one_by_one}
    shared(prompts[0])  # warm-up
    seconds = {}
    for name, way in ways.items():
        start = time.perf_counter()
        for prompt in prompts:
            way(prompt)
        seconds[name] = (time.perf_counter() - start) / len(prompts)
    base = seconds["shared KV cache (used)"]
    for name, value in seconds.items():
        print(f"{name:<28} {value:7.2f} s per prompt   {value / base:5.2f}x the shared KV cache's time")
    return 0


if __name__ == "__main__":
    sys.exit(main())
