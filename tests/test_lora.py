"""LoRA through peft: train adapters, evaluate them, push them (or merged weights) to the
loopback Hub, and reproduce the card's numbers from what was pushed."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from symgen_datasets.cli import main
from symgen_datasets.tasks import get_task
from tests.hub_server import symgen_on_hub as symgen

DEMOS = get_task("geoquery_sql").packaged / "10_shot.jsonl"


def expected_trainable(model_folder, rank: int) -> tuple[int, int]:
    """LoRA's parameters on every linear layer but the output head (peft's ``all-linear``):
    r x (in + out) each; and all parameters with them."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_folder)
    adapters = sum(rank * (m.in_features + m.out_features) for name, m in model.named_modules()
                   if isinstance(m, torch.nn.Linear) and not name.endswith("lm_head"))
    return adapters, sum(p.numel() for p in model.parameters()) + adapters


@pytest.fixture(scope="module")
def lora_run(tiny, tmp_path_factory):
    out = tmp_path_factory.mktemp("lora") / "model"
    done = subprocess.run([sys.executable, "-m", "symgen_datasets.cli", "train", "--dataset", str(DEMOS), "--task",
                           "geoquery_sql", "--model", str(tiny["llama"]), "--output-dir", str(out), "--max-steps", "3",
                           "--per-device-train-batch-size", "4", "--eval-limit", "6", "--max-target-length", "16",
                           "--learning-rate", "1e-2", "--lora-r", "8", "--lora-alpha", "16"],
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return {"out": out, "stdout": done.stdout + done.stderr, "base": tiny["llama"]}


def test_lora_trains_adapters_and_prints_the_trainable_share(lora_run):
    out = lora_run["out"]
    trainable, total = expected_trainable(lora_run["base"], 8)
    assert (f"LoRA: trainable params: {trainable:,} || all params: {total:,} || trainable%: "
            f"{100 * trainable / total:.4f}") in lora_run["stdout"]
    assert (out / "adapter_model.safetensors").is_file() and not (out / "model.safetensors").exists()
    adapter_config = json.loads((out / "adapter_config.json").read_text())
    assert adapter_config["r"] == 8 and adapter_config["lora_alpha"] == 16
    assert adapter_config["base_model_name_or_path"] == lora_run["base"].name  # a folder by its name, no machine path
    record = json.loads((out / "symgen_task_model.json").read_text())
    assert record["adapter"] is True and record["training"]["adapter"]["trainable_parameters"] == trainable
    assert record["training"]["hyperparameters"]["lora_r"] == 8
    card = (out / "README.md").read_text()
    assert "library_name: peft" in card and "This repository holds **LoRA adapters**" in card
    assert "| weights | LoRA adapters (r=8, alpha=16" in card


def test_lora_adapters_change_the_model_and_evaluate_loads_them(lora_run, capsys):
    """`symgen evaluate` loads the base, applies the adapters (which moved away from zero) and
    gives the numbers recorded at training."""
    from safetensors.torch import load_file

    out = lora_run["out"]
    weights = load_file(str(out / "adapter_model.safetensors"))
    assert any("lora_B" in name and tensor.abs().max() > 0 for name, tensor in weights.items())
    assert main(["evaluate", str(out), "--limit", "6", "--output-dir", str(out.parent / "evaluation"), "--json"]) == 0
    measured = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    best = json.loads((out / "symgen_task_model.json").read_text())["training"]["best"]
    for name in ("execution_accuracy", "exact_match", "valid_sql"):
        assert measured[name] == pytest.approx(best[name])


def test_push_the_adapters_or_merged_weights_then_reproduce(lora_run, hub):
    out = lora_run["out"]
    pushed = symgen(hub, "push-model", str(out), "symgen/geo-lora", "--version", "1.0.0")
    assert pushed.returncode == 0, pushed.stderr[-3000:]
    files = hub.models["symgen/geo-lora"].commits[hub.models["symgen/geo-lora"].tags["v1.0.0"]].files
    assert "adapter_model.safetensors" in files and "model.safetensors" not in files
    merged = symgen(hub, "push-model", str(out), "symgen/geo-lora", "--version", "1.1.0", "--merge")
    assert merged.returncode == 0, merged.stderr[-3000:]
    files = hub.models["symgen/geo-lora"].commits[hub.models["symgen/geo-lora"].tags["v1.1.0"]].files
    assert "model.safetensors" in files and "adapter_model.safetensors" not in files
    record = json.loads(files["symgen_task_model.json"])
    assert record["adapter"] is False and record["training"]["merged_from"]["adapter"]["r"] == 8
    assert "library_name: transformers" in files["README.md"].decode()
    for tag in ("v1.0.0", "v1.1.0"):
        reproduced = symgen(hub, "reproduce", f"symgen/geo-lora@{tag}")
        assert reproduced.returncode == 0, reproduced.stdout + reproduced.stderr[-3000:]
        assert "weights match the card" in reproduced.stdout and reproduced.stdout.splitlines()[-1].startswith(
            "reproduced within")


def test_lora_is_refused_where_it_cannot_apply(tiny, tmp_path):
    from symgen_datasets.errors import InputError
    from symgen_datasets.training import TrainConfig, train

    with pytest.raises(InputError, match="--lora-target-modules no_such_proj"):
        train(TrainConfig(dataset=str(DEMOS), output_dir=str(tmp_path / "m"), task="geoquery_sql", model=str(tiny["llama"]),
                          max_steps=1, eval_strategy="no", lora_r=4, lora_target_modules="no_such_proj"))
    with pytest.raises(InputError, match="--lora-r -1"):
        train(TrainConfig(dataset=str(DEMOS), output_dir=str(tmp_path / "n"), lora_r=-1))
