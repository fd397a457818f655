"""Training task models: the embedded model fine-tuned a few steps on real gold and evaluated on
real dev data; a sequence-to-sequence model; two processes (gloo) ending with identical weights,
data parallel and FSDP training what one process trains;
a resumed run ending with the uninterrupted run's weights; publishing with a model card and
`symgen reproduce` (and `--retrain`) against the loopback Hub."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from symgen_datasets.cli import main
from symgen_datasets.tasks import get_task
from tests.hub_server import symgen_on_hub as symgen
from tests.llm_servers import LLMServer

ROOT = Path(__file__).resolve().parent.parent
DEMOS = {name: get_task(name).packaged / "10_shot.jsonl" for name in ("geoquery_sql", "mtop")}


def card_header(path: Path) -> dict:
    return yaml.safe_load(path.read_text().split("---")[1])


def run(args: list[str], env: dict | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    result = subprocess.run(args, env=env or os.environ.copy(), cwd=cwd, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, (result.stdout[-2000:], result.stderr[-4000:])
    return result


@pytest.fixture(scope="module")
def embedded_run(tmp_path_factory) -> dict:
    """The embedded SmolLM2 fine-tuned 4 steps on GeoQuery-SQL's real demonstrations, evaluated on
    8 real dev questions each epoch, with the LLM's few-shot score on the same rows as baseline."""
    from tests.llm_servers import OracleResponder

    root = tmp_path_factory.mktemp("embedded")
    dev = [json.loads(line) for line in get_task("geoquery_sql").references_path().read_text().splitlines()]
    oracle = OracleResponder({r["question"]: r["query"] for r in dev}, questions=[r["question"] for r in dev])
    with LLMServer(oracle) as server:
        assert main(["evaluate", "--task", "geoquery_sql", "--generator", f"tgi:{server.url}", "--limit", "8",
                     "--output-dir", str(root / "llm")]) == 0
    out = root / "model"
    assert main(["train", "--dataset", str(DEMOS["geoquery_sql"]), "--task", "geoquery_sql", "--output-dir", str(out),
                 "--max-steps", "4", "--per-device-train-batch-size", "4", "--eval-limit", "8", "--save-steps", "2",
                 "--logging-steps", "1", "--learning-rate", "1e-4", "--max-target-length", "64", "--baseline-metrics", str(root / "llm" / "metrics.json")]) == 0
    return {"out": out, "baseline": json.loads((root / "llm" / "metrics.json").read_text())}


def test_the_embedded_model_trains_and_is_evaluated_on_real_dev_data(embedded_run, capsys):
    out = embedded_run["out"]
    for name in ("model.safetensors", "config.json", "tokenizer.json", "symgen_task_model.json", "README.md"):
        assert (out / name).is_file(), name
    assert (out / "eval_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["checkpoint-2", "checkpoint-4"]
    config = json.loads((out / "symgen_task_model.json").read_text())
    training = config["training"]
    assert config["task"] == "geoquery_sql" and config["architecture"] == "causal" and config["base_model"] == "embedded"
    assert training["steps"] == 4 and training["rows"] == 10 and training["dataset"]["file"] == "10_shot.jsonl"
    # 10 rows in batches of 4: 3 steps an epoch; evaluated after the epoch and at the end
    assert [record["step"] for record in training["history"]] == [3, 4]
    assert training["best"] in training["history"] and training["primary_metric"] == "execution_accuracy"
    assert training["eval_references"]["packaged"] and training["eval_references"]["rows"] == 8
    assert training["train_tokens_per_s"] > 0 and training["peak_memory_mib"] > 100
    # the saved model is the best one: evaluating it again gives the recorded numbers
    assert main(["evaluate", str(out), "--limit", "8", "--output-dir", str(out.parent / "again"), "--json"]) == 0
    again = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for name in ("execution_accuracy", "exact_match", "valid_sql"):
        assert again[name] == pytest.approx(training["best"][name])


def test_the_model_card_has_every_field(embedded_run):
    out = embedded_run["out"]
    header = card_header(out / "README.md")
    assert header["base_model"] == "HuggingFaceTB/SmolLM2-135M-Instruct" and header["license"] == "apache-2.0"
    assert header["library_name"] == "transformers" and header["pipeline_tag"] == "text-generation"
    assert "symgen" in header["tags"] and "geoquery_sql" in header["tags"]
    [result] = header["model-index"][0]["results"]
    metrics = {m["type"]: m["value"] for m in result["metrics"]}
    best = header["symgen"]["training"]["best"]
    assert metrics == {name: pytest.approx(best[name], abs=1e-4) for name in ("execution_accuracy", "exact_match", "valid_sql")}
    assert result["dataset"]["split"] == "validation" and "8 rows" in result["dataset"]["name"]
    body = (out / "README.md").read_text().split("---", 2)[2]
    baseline = embedded_run["baseline"]["metrics"]["execution_accuracy"]
    for text in ("## Results on real dev data", "generator LLM, few-shot (test-llm)", f"{baseline:.4f}",
                 "![evaluation curve](eval_curve.png)", "| learning_rate | 0.0001 |", "| optimizer steps | 4 ",
                 "## Intended use and limitations", "ye-etal-2023-generating", "symgen reproduce"):
        assert text in body, text


def test_a_sequence_to_sequence_model_trains_and_predicts(tiny, tmp_path, capsys):
    out = tmp_path / "t5"
    assert main(["train", "--dataset", str(DEMOS["mtop"]), "--task", "mtop", "--model", str(tiny["t5"]),
                 "--output-dir", str(out), "--max-steps", "3", "--per-device-train-batch-size", "4", "--eval-limit", "4",
                 "--max-target-length", "24", "--learning-rate", "1e-3"]) == 0
    config = json.loads((out / "symgen_task_model.json").read_text())
    assert config["architecture"] == "seq2seq" and config["training"]["primary_metric"] == "exact_match"
    assert card_header(out / "README.md")["pipeline_tag"] == "text2text-generation"
    assert main(["evaluate", str(out), "--limit", "4", "--output-dir", str(tmp_path / "e")]) == 0
    saved = [json.loads(line) for line in (tmp_path / "e" / "predictions.jsonl").read_text().splitlines()]
    assert len(saved) == 4 and all("logical_form" in row and "prediction" in row for row in saved)


def test_two_processes_data_parallel_and_fsdp_train_what_one_process_trains(tiny, tmp_path):
    """2 processes x 2 rows against 1 process x 4 rows, same seed: the same rows each step, each
    process's loss taken over the step's target tokens of both (num_items_in_batch), so the
    weights agree within float error, data parallel (DDP) and sharded alike. FSDP is the shipped
    config (training/configs/fsdp.yaml: FSDP2, sharded checkpoints) on CPU processes (gloo);
    its run resumed from the step-1 sharded checkpoint (with gradient checkpointing) ends with the
    same weights, and so do LoRA
    adapters trained on the sharded model."""
    from safetensors.torch import load_file

    common = ["--dataset", str(DEMOS["geoquery_sql"]), "--task", "geoquery_sql", "--model", str(tiny["llama"]),
              "--max-steps", "2", "--eval-strategy", "no", "--learning-rate", "1e-3", "--seed", "3"]
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "2", "--num_machines", "1",
              "--mixed_precision", "no", "--dynamo_backend", "no"]
    script = [str(ROOT / "training" / "finetune.py"), *common, "--per-device-train-batch-size", "2"]
    fsdp = [*launch[:3], "--config_file", str(ROOT / "training" / "configs" / "fsdp.yaml"), *launch[3:]]
    assert main(["train", *common, "--output-dir", str(tmp_path / "one"), "--per-device-train-batch-size", "4"]) == 0
    # data parallel (DDP), evaluated at the end on dev rows split between the processes and gathered
    launched = run([*launch, "--multi_gpu", *script, "--output-dir", str(tmp_path / "ddp"), "--eval-strategy", "steps",
                    "--eval-steps", "2", "--eval-limit", "6"], cwd=tmp_path)
    training = json.loads((tmp_path / "ddp" / "symgen_task_model.json").read_text())["training"]
    assert training["distributed_type"] == "multi_cpu" and training["num_processes"] == 2
    first, second = training["final_weights_sha256"]
    assert first == second  # the replicas never diverged
    assert training["history"][0]["step"] == 2 and training["eval_references"]["rows"] == 6
    assert launched.stdout.count("wrote the model") == 1  # one record and card, from the main process
    sharded = run([*fsdp, *script, "--output-dir", str(tmp_path / "fsdp"), "--save-steps", "1"], cwd=tmp_path)
    assert "FSDP2 on 2 CPU processes (gloo)" in sharded.stdout
    checkpoint = tmp_path / "fsdp" / "checkpoints" / "checkpoint-1"
    assert (checkpoint / "pytorch_model_fsdp_0").is_dir()  # sharded: one file per process
    assert {p.name for p in checkpoint.glob("random_states_*.pkl")} == {"random_states_0.pkl", "random_states_1.pkl"}
    shutil.copytree(checkpoint, tmp_path / "resumed" / "checkpoints" / "checkpoint-1")
    # (with activation checkpointing: it recomputes, it does not change what is computed)
    run([*fsdp, *script, "--output-dir", str(tmp_path / "resumed"), "--resume-from-checkpoint", "latest",
         "--gradient-checkpointing"], cwd=tmp_path)

    one = load_file(str(tmp_path / "one" / "model.safetensors"))
    assert any((one[k] - load_file(str(tiny["llama"] / "model.safetensors"))[k]).abs().max() > 1e-4 for k in one)
    for name in ("ddp", "fsdp", "resumed"):
        other = load_file(str(tmp_path / name / "model.safetensors"))  # the whole model, as from_pretrained reads it
        assert one.keys() == other.keys(), name
        assert max((one[k] - other[k]).abs().max().item() for k in one) < 1e-5, name
    training = json.loads((tmp_path / "fsdp" / "symgen_task_model.json").read_text())["training"]
    assert training["distributed_type"] == "fsdp" and training["num_processes"] == 2
    assert len(training["final_weights_sha256"]) == 1  # the gathered model, on the main process

    # LoRA adapters on the sharded model (no adapter dropout: its masks depend on the split),
    # evaluated on dev rows split over the processes in step
    lora = ["--lora-r", "4", "--lora-dropout", "0", "--max-target-length", "8"]
    assert main(["train", *common, *lora, "--output-dir", str(tmp_path / "lora-one"), "--per-device-train-batch-size", "4"]) == 0
    run([*fsdp, *script, *lora, "--output-dir", str(tmp_path / "lora-fsdp"), "--eval-strategy", "steps", "--eval-steps", "2",
         "--eval-limit", "3"], cwd=tmp_path)
    one, other = (load_file(str(tmp_path / name / "adapter_model.safetensors")) for name in ("lora-one", "lora-fsdp"))
    assert one.keys() == other.keys() and max((one[k] - other[k]).abs().max().item() for k in one) < 1e-5
    assert max(one[k].abs().max().item() for k in one if "lora_B" in k) > 1e-4  # the adapters trained
    training = json.loads((tmp_path / "lora-fsdp" / "symgen_task_model.json").read_text())["training"]
    assert training["history"][0]["step"] == 2 and training["eval_references"]["rows"] == 3


@pytest.mark.parametrize("environment, message", [
    ({"ACCELERATE_USE_DEEPSPEED": "true"}, "DeepSpeed from the accelerate config needs GPUs"),
    ({"ACCELERATE_USE_FSDP": "true", "FSDP_VERSION": "1", "WORLD_SIZE": "2"}, "set fsdp_version: 2"),
    ({"ACCELERATE_USE_FSDP": "true", "FSDP_VERSION": "2", "WORLD_SIZE": "1"}, "launch at least 2"),
])
def test_a_sharded_config_that_cannot_run_on_cpus_is_refused_with_what_to_do(tiny, tmp_path, monkeypatch, capsys,
                                                                                environment, message):
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    assert main(["train", "--dataset", str(DEMOS["geoquery_sql"]), "--task", "geoquery_sql", "--model",
                 str(tiny["llama"]), "--output-dir", str(tmp_path / "m"), "--max-steps", "1", "--cpu"]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "m").exists()


def test_a_resumed_run_ends_with_the_uninterrupted_runs_weights(tiny, tmp_path):
    def train(output: str, *extra: str, seed: str = "42") -> int:
        return main(["train", "--dataset", str(DEMOS["geoquery_sql"]), "--task", "geoquery_sql", "--model", str(tiny["llama"]),
                     "--max-steps", "6", "--save-steps", "3", "--per-device-train-batch-size", "4",
                     "--gradient-accumulation-steps", "2", "--eval-strategy", "no", "--learning-rate", "1e-3",
                     "--seed", seed, "--output-dir", str(tmp_path / output), *extra])

    assert train("whole") == 0
    # the interrupted run: only the checkpoint of step 3 (mid-epoch, mid-accumulation count) survives
    shutil.copytree(tmp_path / "whole" / "checkpoints" / "checkpoint-3", tmp_path / "resumed" / "checkpoints" / "checkpoint-3")
    assert train("resumed", "--resume-from-checkpoint", "latest") == 0
    assert train("other-seed", seed="7") == 0

    def digest(folder: str) -> str:
        return json.loads((tmp_path / folder / "symgen_task_model.json").read_text())["training"]["final_weights_sha256"][0]

    assert digest("resumed") == digest("whole")
    assert digest("other-seed") != digest("whole")  # the comparison can fail
    assert (tmp_path / "resumed" / "model.safetensors").read_bytes() == (tmp_path / "whole" / "model.safetensors").read_bytes()
    assert train("none", "--resume-from-checkpoint", "latest") == 2


def test_push_model_then_reproduce_prints_the_same_numbers(hub, embedded_run, tmp_path):
    out = embedded_run["out"]
    pushed = symgen(hub, "push-model", str(out), "symgen/geo-t1", "--version", "1.0.0")
    assert pushed.returncode == 0, pushed.stderr[-3000:]
    assert "pushed symgen/geo-t1 v1.0.0" in pushed.stdout
    repo = hub.models["symgen/geo-t1"]
    files = repo.commits[repo.tags["v1.0.0"]].files
    assert "model.safetensors" in files and "symgen_task_model.json" in files and "eval_curve.png" in files
    assert not any(path.startswith("checkpoints/") for path in files)
    card = files["README.md"].decode()
    assert 'from_pretrained("symgen/geo-t1", revision="v1.0.0")' in card and "**Version 1.0.0.**" in card
    again = symgen(hub, "push-model", str(out), "symgen/geo-t1", "--version", "1.0.0")
    assert again.returncode == 2 and "tag v1.0.0 exists already" in again.stderr

    reproduced = symgen(hub, "reproduce", "symgen/geo-t1@v1.0.0")
    assert reproduced.returncode == 0, reproduced.stderr[-3000:]
    best = json.loads((out / "symgen_task_model.json").read_text())["training"]["best"]
    lines = reproduced.stdout.splitlines()
    row = next(line for line in lines if line.strip().startswith("execution_accuracy"))
    assert row.split()[1:4] == [f"{best['execution_accuracy']:.4f}", f"{best['execution_accuracy']:.4f}", "+0.0000"]
    assert "matches the card" in lines[0] and lines[-1].startswith("reproduced within")
    # a forged training record is caught: test_reproduce_catches_a_shown_metric_tampered_weights_and_a_truncated_file


def test_train_from_a_hub_dataset_revision_and_reproduce_by_retraining(hub, tiny, tmp_path, oracle):
    with LLMServer(oracle) as server:
        generated = symgen(hub, "generate", "geoquery_sql", "--generator", f"tgi:{server.url}", "--num-questions", "8",
                           "--num-samples", "4", "--min-votes", "2", "--output", str(tmp_path / "data"),
                           "--push-to-hub", "symgen/geo-synth", "--version", "1.0.0")
    assert generated.returncode == 0, generated.stderr[-3000:]
    trained = symgen(hub, "train", "--dataset", "symgen/geo-synth@v1.0.0", "--model", str(tiny["llama"]),
                     "--output-dir", str(tmp_path / "model"), "--max-steps", "2", "--per-device-train-batch-size", "4",
                     "--eval-limit", "4", "--max-target-length", "16", "--learning-rate", "1e-3")
    assert trained.returncode == 0, trained.stderr[-3000:]
    dataset = json.loads((tmp_path / "model" / "symgen_task_model.json").read_text())["training"]["dataset"]
    assert dataset["id"] == "symgen/geo-synth" and dataset["revision"] == "v1.0.0"
    assert dataset["commit"] == hub.repos["symgen/geo-synth"].tags["v1.0.0"] and dataset["generator"]["model"] == "test-llm"
    assert "datasets:\n- symgen/geo-synth" in (tmp_path / "model" / "README.md").read_text()
    assert symgen(hub, "push-model", str(tmp_path / "model"), "symgen/geo-tiny", "--version", "1.0.0").returncode == 0
    reproduced = symgen(hub, "reproduce", "symgen/geo-tiny@v1.0.0", "--retrain")
    assert reproduced.returncode == 0, reproduced.stdout + reproduced.stderr[-3000:]
    assert "retrained" in reproduced.stdout and reproduced.stdout.splitlines()[-1].startswith("reproduced within")


def test_reproduce_catches_a_shown_metric_tampered_weights_and_a_truncated_file(hub, embedded_run, tmp_path):
    """A forged training record, and the card's model-index and table, are caught (exit 1); weights tampered with at the
    Hub or truncated are caught by their digest before anything is evaluated (exit 2, no
    traceback)."""
    out = embedded_run["out"]
    copy = tmp_path / "copy"
    shutil.copytree(out, copy, ignore=shutil.ignore_patterns("checkpoints"))
    # a training record that reports another number (the card made from it shows it too)
    config = json.loads((copy / "symgen_task_model.json").read_text())
    config["training"]["best"]["execution_accuracy"] += 0.25
    (copy / "symgen_task_model.json").write_text(json.dumps(config))
    assert symgen(hub, "push-model", str(copy), "symgen/geo-t2", "--version", "1.0.0").returncode == 0
    repo = hub.models["symgen/geo-t2"]
    files = repo.commits[repo.tags["v1.0.0"]].files
    card = files["README.md"].decode()
    best = json.loads((out / "symgen_task_model.json").read_text())["training"]["best"]["exact_match"]
    shown = f"{best:.4f}"
    assert f"| exact_match | {shown} |" in card
    forged = card.replace(f"| exact_match | {shown} |", "| exact_match | 0.9876 |")
    forged = forged.replace(f"value: {round(best, 4)}\n", "value: 0.9876\n", 1) if f"value: {round(best, 4)}\n" in forged else forged
    files["README.md"] = forged.encode()
    caught = symgen(hub, "reproduce", "symgen/geo-t2@v1.0.0")
    assert caught.returncode == 1, caught.stdout + caught.stderr[-2000:]
    assert "NOT reproduced" in caught.stdout and "table:exact_match" in caught.stdout
    assert "execution_accuracy" in caught.stdout.split("NOT reproduced", 1)[1]  # the forged record, named too
    assert "the card's table shows exact_match 0.9876" in caught.stdout
    assert "weights match the card (model.safetensors, sha256)" in caught.stdout

    # the weights at the Hub, XOR-ed in the middle (a new version, so nothing is cached)
    assert symgen(hub, "push-model", str(copy), "symgen/geo-t2", "--version", "1.0.1").returncode == 0
    weights = bytearray(repo.commits[repo.tags["v1.0.1"]].files["model.safetensors"])
    middle = len(weights) // 2
    weights[middle:middle + 1_000_000] = bytes(b ^ 0x5A for b in weights[middle:middle + 1_000_000])
    repo.commits[repo.tags["v1.0.1"]].files["model.safetensors"] = bytes(weights)
    tampered = symgen(hub, "reproduce", "symgen/geo-t2@v1.0.1")
    assert tampered.returncode == 2 and "model.safetensors: sha256" in tampered.stderr, tampered.stderr[-2000:]
    assert "Traceback" not in tampered.stderr

    # a truncated file in a local folder
    (copy / "model.safetensors").write_bytes((copy / "model.safetensors").read_bytes()[:4096])
    truncated = symgen(hub, "reproduce", str(copy))
    assert truncated.returncode == 2 and "model.safetensors: sha256" in truncated.stderr, truncated.stderr[-2000:]
    assert "Traceback" not in truncated.stderr
