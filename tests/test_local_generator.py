"""The in-process transformers backend on the real embedded model (SmolLM2-135M-Instruct)."""

from __future__ import annotations

import pytest

from symgen_datasets.generators import EventLoopThread, SamplingParams, from_spec
from symgen_datasets.generators.local import prepare_embedded_model


@pytest.fixture(scope="module")
def generator():
    return from_spec(f"transformers:{prepare_embedded_model()}")


def test_batched_sampling_is_seeded_and_scored(generator):
    loop = EventLoopThread()
    prompt = "-- Question: how many states are there\nSELECT count(*) FROM state;\n\n-- Question: list all rivers\n"
    params = SamplingParams(temperature=0.8, max_new_tokens=24, stop=("\n",))
    first = loop.run(generator.sample(prompt, params, [5, 6, 7]))
    again = loop.run(generator.sample(prompt, params, [5, 6, 7]))
    loop.close()
    assert len(first) == 3 and first == again  # same seeds, same completions
    assert all(c.mean_logprob is not None and c.mean_logprob <= 0 for c in first)
    assert all(c.text.count("\n") <= 1 for c in first)  # stopped at the first newline
    assert generator.count_tokens("SELECT count(*) FROM state") > 3
    assert generator.spec.startswith("transformers:")


def test_greedy_decoding_is_deterministic_across_seeds(generator):
    loop = EventLoopThread()
    params = SamplingParams(temperature=0.0, max_new_tokens=12, stop=("\n",))
    a = loop.run(generator.sample("The capital of France is", params, [1]))
    b = loop.run(generator.sample("The capital of France is", params, [2]))
    loop.close()
    assert a[0].text == b[0].text and a[0].text.strip()


def test_missing_model_path_is_a_clear_error(tmp_path):
    from symgen_datasets.errors import InputError

    with pytest.raises(InputError, match="cannot load the model"):
        from_spec(f"transformers:{tmp_path / 'no-model'}")


def test_a_request_s_candidates_come_from_one_prompt_encoding(generator):
    """K seeds: one prefill of the prompt, then one batched decode of K sequences (the prompt's
    KV cache shared), and the bill: the prompt once, each candidate's tokens."""
    loop = EventLoopThread()
    prompt = "-- Question: how many states are there\nSELECT count(*) FROM state;\n\n-- Question: list all rivers\n"
    calls = []
    hook = generator.lm.register_forward_pre_hook(
        lambda module, args, kwargs: calls.append(tuple(kwargs["input_ids"].shape)), with_kwargs=True)
    try:
        completions = loop.run(generator.sample(prompt, SamplingParams(0.8, 6, ()), [1, 2, 3, 4]))
    finally:
        hook.remove()
        loop.close()
    prompt_length = generator.count_tokens(prompt)
    prefills = [shape for shape in calls if shape[1] > 1]
    assert prefills == [(1, prompt_length - 1)]  # the prompt encoded once, for one sequence
    assert all(shape[0] == 4 for shape in calls[1:])  # then the 4 candidates decode together
    assert completions[0].prompt_tokens == prompt_length and all(c.prompt_tokens == 0 for c in completions[1:])
    assert all(0 < c.completion_tokens <= 6 for c in completions)
