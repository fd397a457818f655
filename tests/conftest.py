"""Shared fixtures: real databases and dev questions, loopback LLM servers."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"
sys.path.insert(0, str(ROOT))  # tests.llm_servers is test infrastructure, importable by benchmarks too

from symgen_datasets.tasks import get_task  # noqa: E402


@pytest.fixture(scope="session")
def geoquery_dev() -> list[dict]:
    """The 280 GeoQuery-SQL dev questions with gold SQL."""
    return [json.loads(line) for line in (get_task("geoquery_sql").references_path()).read_text().splitlines()]


@pytest.fixture(scope="session")
def geography_db() -> Path:
    """The real GeoQuery SQLite database packaged with the geoquery_sql task."""
    return get_task("geoquery_sql").databases().source_path("geography_db")


@pytest.fixture(scope="session")
def spider_dev_packaged() -> Path:
    return get_task("spider").references_path()


@pytest.fixture()
def oracle(geoquery_dev):
    """A responder right half of the time on GeoQuery-SQL dev questions."""
    from tests.llm_servers import OracleResponder

    gold = {row["question"].strip(): row["query"] for row in geoquery_dev}
    return OracleResponder(gold, accuracy=0.5, questions=[row["question"] for row in geoquery_dev[:50]])


@pytest.fixture(scope="session")
def tiny(tmp_path_factory) -> dict[str, Path]:
    """Randomly initialised Llama and T5 models with the embedded model's tokenizer (real
    architectures, small enough for a few CPU steps)."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM, T5Config, T5ForConditionalGeneration

    from symgen_datasets.generators.local import prepare_embedded_model

    tokenizer = AutoTokenizer.from_pretrained(prepare_embedded_model())
    root = tmp_path_factory.mktemp("tiny")
    ids = {"pad_token_id": tokenizer.pad_token_id, "eos_token_id": tokenizer.eos_token_id}
    torch.manual_seed(0)
    models = {
        "llama": LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                                              num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
                                              max_position_embeddings=1024, bos_token_id=tokenizer.bos_token_id,
                                              tie_word_embeddings=True, **ids)),
        "t5": T5ForConditionalGeneration(T5Config(vocab_size=len(tokenizer), d_model=32, d_ff=64, d_kv=16, num_layers=2,
                                                  num_heads=2, decoder_start_token_id=tokenizer.pad_token_id, **ids)),
    }
    for name, model in models.items():
        model.save_pretrained(root / name)
        tokenizer.save_pretrained(root / name)
    return {name: root / name for name in models}


@pytest.fixture(scope="session")
def tiny_llama(tiny) -> Path:
    """The tiny Llama of :func:`tiny`."""
    return tiny["llama"]


@pytest.fixture()
def hub(tmp_path):
    """A loopback Hub server (tests/hub_server.py) with ``.env``: the environment a ``symgen``
    subprocess needs to use it (see :func:`tests.hub_server.symgen_on_hub`)."""
    from tests.hub_server import HubServer

    with HubServer() as server:
        server.env = {**os.environ, "HF_ENDPOINT": server.url, "HF_HUB_DISABLE_XET": "1", "HF_TOKEN": "hf_test_token",
                      "HF_HOME": str(tmp_path / "hf-home"), "HF_HUB_DISABLE_TELEMETRY": "1",
                      "TOKENIZERS_PARALLELISM": "false"}
        yield server
