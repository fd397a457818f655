"""`from symgen_datasets.training import TrainConfig, train`: the Python API that `symgen train`,
`symgen s3` and `reproduce --retrain` share, with its defaults written once."""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path

import pytest

from symgen_datasets.cli import main
from symgen_datasets.errors import InputError
from symgen_datasets.tasks import get_task

DEMOS = get_task("geoquery_sql").packaged / "10_shot.jsonl"


def test_train_from_python_equals_the_command_line(tiny, tmp_path):
    """The same settings through ``train(TrainConfig(...))`` and ``symgen train`` give the same
    weights; the caller's config is left as given and the result says what was trained."""
    from symgen_datasets.training import TrainConfig, TrainResult, train

    config = TrainConfig(dataset=str(DEMOS), output_dir=str(tmp_path / "api"), task="geoquery_sql", model=str(tiny["llama"]),
                         max_steps=3, per_device_train_batch_size=4, eval_strategy="no", learning_rate=1e-3,
                         logging_steps=1)
    result = train(config)
    assert isinstance(result, TrainResult) and result.steps == 3 and result.output_dir == tmp_path / "api"
    assert result.train_tokens_per_s > 0 and result.peak_memory_mib > 100 and result.best is None
    assert config.max_target_length is None  # fitted inside, not written back
    assert main(["train", "--dataset", str(DEMOS), "--output-dir", str(tmp_path / "cli"), "--task", "geoquery_sql",
                 "--model", str(tiny["llama"]), "--max-steps", "3", "--per-device-train-batch-size", "4",
                 "--eval-strategy", "no", "--learning-rate", "1e-3", "--logging-steps", "1"]) == 0

    def recorded(folder: str) -> dict:
        return json.loads((tmp_path / folder / "symgen_task_model.json").read_text())["training"]

    assert recorded("api")["final_weights_sha256"] == recorded("cli")["final_weights_sha256"]
    assert recorded("api")["hyperparameters"] == recorded("cli")["hyperparameters"]


def test_the_command_line_flags_are_the_config_s_fields_with_its_defaults():
    from symgen_datasets.training.config import TrainConfig, train_parser

    parser = train_parser()
    actions = {action.dest: action for action in parser._actions if action.dest != "help"}
    for f in fields(TrainConfig):
        if f.name == "task_options":
            continue
        assert f.name in actions, f.name
        assert actions[f.name].required == (f.name in ("dataset", "output_dir"))
        if not actions[f.name].required:
            assert actions[f.name].default == f.default, f.name
    assert "--cpu" in actions["use_cpu"].option_strings


def test_bad_settings_are_refused_with_every_problem_named(tmp_path):
    from symgen_datasets.training import TrainConfig, train

    with pytest.raises(InputError) as error:
        train(TrainConfig(dataset=str(DEMOS), output_dir=str(tmp_path / "m"), learning_rate=0, warmup_ratio=2,
                          lr_scheduler_type="sideways"))
    message = str(error.value)
    assert "--learning-rate 0: must be positive" in message and "--warmup-ratio 2" in message
    assert "--lr-scheduler-type sideways" in message
    assert not (tmp_path / "m").exists()


def test_training_flags_become_overrides_and_bad_ones_are_named():
    from symgen_datasets.training.config import overrides_of

    assert overrides_of(["--max-steps", "60", "--learning-rate", "1e-4", "--bf16", "--cpu"]) == {
        "max_steps": 60, "learning_rate": 1e-4, "bf16": True, "use_cpu": True}
    assert overrides_of([]) == {}
    with pytest.raises(InputError, match="unknown --no-such-flag"):
        overrides_of(["--no-such-flag", "3"])
    with pytest.raises(InputError, match="invalid int value: 'many'"):
        overrides_of(["--max-steps", "many"])


def test_s3_rounds_train_with_the_config_and_refuse_what_a_round_sets(tmp_path):
    from symgen_datasets.pipeline.settings import GenerateSettings
    from symgen_datasets.s3.loop import S3Settings

    settings = S3Settings(GenerateSettings(task="geoquery_sql", seed=3, task_options={"db_dir": "/data/dbs"}), "v.jsonl",
                          str(tmp_path / "o"), model="embedded", train={"max_steps": 60, "learning_rate": 1e-4})
    config = settings.training_config("round-1/data", "round-1/model")
    assert (config.dataset, config.output_dir, config.task, config.seed, config.eval_strategy) == (
        "round-1/data", "round-1/model", "geoquery_sql", 3, "no")
    assert config.max_steps == 60 and config.learning_rate == 1e-4 and config.task_options == {"db_dir": "/data/dbs"}
    for bad in ({"seed": 1}, {"max_stepz": 1}):
        with pytest.raises(InputError, match="not settings of `symgen train` a round may change"):
            S3Settings(GenerateSettings(task="geoquery_sql"), "v.jsonl", str(tmp_path / "o"), train=bad).training_config("d", "m")
    with pytest.raises(InputError, match="--learning-rate -1"):
        S3Settings(GenerateSettings(task="geoquery_sql"), "v.jsonl", str(tmp_path / "o"), train={"learning_rate": -1}).check()


def test_reproduce_retrains_with_the_card_s_hyperparameters(tmp_path):
    from symgen_datasets.hub.reproduce import retrain_config
    from symgen_datasets.training.task_model import TaskModelConfig

    card = TaskModelConfig(task="geoquery_sql", architecture="causal", max_source_length=512, max_target_length=64,
                           base_model="embedded")
    card.training = {"dataset": {"id": "symgen/geo-synth", "commit": "abc123"},
                     "hyperparameters": {"max_steps": 6, "learning_rate": 0.001, "seed": 7, "eval_limit": None,
                                         "max_target_length": 64, "not_a_setting": 1}}
    config = retrain_config(card, tmp_path / "again", Path("dev.jsonl"), {"db_dir": "dbs"})
    assert (config.dataset, config.model, config.max_steps, config.learning_rate, config.seed) == (
        "symgen/geo-synth@abc123", "embedded", 6, 0.001, 7)
    assert config.eval_limit is None and config.max_target_length == 64 and config.eval_references == "dev.jsonl"
    assert config.task_options == {"db_dir": "dbs"} and config.output_dir == str(tmp_path / "again")


def test_gradient_checkpointing_trains_the_same_weights(tiny, tmp_path):
    from safetensors.torch import load_file

    from symgen_datasets.training import TrainConfig, train

    for checkpointing in (False, True):
        train(TrainConfig(dataset=str(DEMOS), output_dir=str(tmp_path / str(checkpointing)), task="geoquery_sql",
                          model=str(tiny["llama"]), max_steps=2, per_device_train_batch_size=4, eval_strategy="no",
                          learning_rate=1e-3, gradient_checkpointing=checkpointing))
    plain, recomputed = (load_file(str(tmp_path / name / "model.safetensors")) for name in ("False", "True"))
    assert max((plain[k] - recomputed[k]).abs().max().item() for k in plain) < 1e-5
    hyper = json.loads((tmp_path / "True" / "symgen_task_model.json").read_text())["training"]["hyperparameters"]
    assert hyper["gradient_checkpointing"] is True and hyper["packing"] is True
