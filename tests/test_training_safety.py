"""The training output folder and resuming, made safe: flags checked before any model is loaded,
one run per folder, no silent mixing of two runs' checkpoints or weights, the dataset's folder
never overwritten, only complete checkpoints resumed, and a broken or foreign checkpoint refused
with the file or the settings named (exit 2, no traceback)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from symgen_datasets.cli import main
from symgen_datasets.tasks import get_task

DEMOS = get_task("geoquery_sql").packaged / "10_shot.jsonl"
FIXTURES = Path(__file__).parent / "fixtures"


def train(tiny, output: Path, *extra: str, dataset: str = str(DEMOS)) -> int:
    return main(["train", "--dataset", dataset, "--task", "geoquery_sql", "--model", str(tiny["llama"]),
                 "--output-dir", str(output), "--max-steps", "4", "--save-steps", "2", "--per-device-train-batch-size", "4",
                 "--eval-strategy", "no", "--learning-rate", "1e-3", "--max-target-length", "16", *extra])


@pytest.fixture(scope="module")
def trained(tiny, tmp_path_factory) -> Path:
    output = tmp_path_factory.mktemp("trained") / "model"
    assert train(tiny, output) == 0
    return output


def copy(trained: Path, tmp_path: Path) -> Path:
    target = tmp_path / "model"
    shutil.copytree(trained, target)
    return target


@pytest.mark.parametrize("flags, named", [
    (["--learning-rate", "-1e-4"], "--learning-rate"), (["--per-device-train-batch-size", "0"], "--per-device-train-batch-size"),
    (["--gradient-accumulation-steps", "0"], "--gradient-accumulation-steps"), (["--lr-scheduler-type", "bogus"], "--lr-scheduler-type"),
    (["--save-steps", "0"], "--save-steps"), (["--logging-steps", "0"], "--logging-steps"),
    (["--max-steps", "-1", "--num-train-epochs", "0"], "--num-train-epochs"), (["--eval-limit", "-3"], "--eval-limit"),
    (["--eval-steps", "-1"], "--eval-steps"),
])
def test_bad_flags_exit_2_with_the_flag_named_before_anything_is_loaded(tiny, tmp_path, capsys, flags, named):
    with pytest.raises(SystemExit) as stopped:
        train(tiny, tmp_path / "out", *flags)
    assert stopped.value.code == 2 and named in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # refused before any folder, data or model


def test_an_output_dir_below_a_file_and_evaluate_limits_are_refused(tiny, tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    with pytest.raises(SystemExit) as stopped:
        train(tiny, tmp_path / "file" / "model")
    assert stopped.value.code == 2 and "is a file" in capsys.readouterr().err
    for limit in ("0", "-1"):
        with pytest.raises(SystemExit) as stopped:
            main(["evaluate", "--task", "geoquery_sql", "--predictions", str(DEMOS), "--limit", limit])
        assert stopped.value.code == 2 and f"--limit {limit}" in capsys.readouterr().err


def test_a_non_empty_output_dir_is_refused_unless_overwritten_and_then_holds_only_the_new_run(tiny, trained, tmp_path, capsys):
    output = copy(trained, tmp_path)
    assert sorted(p.name for p in (output / "checkpoints").iterdir()) == ["checkpoint-2", "checkpoint-4"]
    assert main(["train", "--dataset", str(DEMOS), "--task", "geoquery_sql", "--model", str(tiny["llama"]),
                 "--output-dir", str(output), "--max-steps", "1", "--save-steps", "1", "--eval-strategy", "no"]) == 2
    assert "is not empty" in capsys.readouterr().err
    assert main(["train", "--dataset", str(DEMOS), "--task", "geoquery_sql", "--model", str(tiny["llama"]),
                 "--output-dir", str(output), "--max-steps", "1", "--save-steps", "1", "--eval-strategy", "no",
                 "--overwrite-output-dir"]) == 0
    assert sorted(p.name for p in (output / "checkpoints").iterdir()) == ["checkpoint-1"]  # the old run's are gone
    assert json.loads((output / "symgen_task_model.json").read_text())["training"]["steps"] == 1


def test_the_datasets_own_folder_is_refused(tiny, tmp_path, capsys):
    dataset = tmp_path / "dataset"
    shutil.copytree(FIXTURES / "spider_synth_v0_1", dataset)
    card = (dataset / "README.md").read_bytes()
    for output in (dataset, dataset / "model"):
        assert main(["train", "--dataset", str(dataset), "--model", str(tiny["llama"]), "--output-dir", str(output),
                     "--max-steps", "1", "--overwrite-output-dir"]) == 2
        assert "the dataset's own folder" in capsys.readouterr().err
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(dataset, elsewhere)  # a folder holding a dataset, not the one trained on
    assert main(["train", "--dataset", str(DEMOS), "--task", "geoquery_sql", "--model", str(tiny["llama"]),
                 "--output-dir", str(elsewhere), "--max-steps", "1", "--overwrite-output-dir"]) == 2
    assert "holds a dataset" in capsys.readouterr().err
    assert (dataset / "README.md").read_bytes() == card and (elsewhere / "README.md").read_bytes() == card


def test_two_trainings_into_one_folder_at_once_are_refused(tiny, tmp_path, capsys):
    output = tmp_path / "busy"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom symgen_datasets.pipeline.lock import RunLock\n"
                               f"with RunLock({str(output)!r}, name='.train.lock'):\n    print('held', flush=True)\n"
                               "    time.sleep(60)"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert train(tiny, output) == 2
        err = capsys.readouterr().err
        assert f"the folder {output} is in use by another run (process {holder.pid}" in err and "Traceback" not in err
    finally:
        holder.kill()
        holder.wait()


def test_latest_is_the_newest_complete_checkpoint(tiny, trained, tmp_path, capsys):
    output = copy(trained, tmp_path)
    checkpoints = output / "checkpoints"
    (checkpoints / "checkpoint-9").mkdir()  # killed while it was written (before the rename, as older versions did)
    (checkpoints / ".checkpoint-12.partial").mkdir()  # killed while it was written
    (checkpoints / "checkpoint-final").mkdir()  # a stray folder
    assert train(tiny, output, "--max-steps", "6", "--resume-from-checkpoint", "latest") == 0
    assert f"resumed from {checkpoints / 'checkpoint-4'} at step 4" in capsys.readouterr().out
    saved = sorted(p.name for p in checkpoints.iterdir() if not p.name.startswith("."))
    assert "checkpoint-6" in saved and not any(p.name.endswith(".partial") and p.name != ".checkpoint-12.partial"
                                               for p in checkpoints.iterdir())
    assert json.loads((output / "symgen_task_model.json").read_text())["training"]["steps"] == 6


@pytest.mark.parametrize("damage, named", [
    ("optimizer", "optimizer.bin"), ("state", "trainer_state.json"), ("state-shape", "trainer_state.json"),
])
def test_a_broken_checkpoint_exits_2_with_the_file_named(tiny, trained, tmp_path, capsys, damage, named):
    output = copy(trained, tmp_path)
    checkpoint = output / "checkpoints" / "checkpoint-4"
    if damage == "optimizer":
        (checkpoint / "optimizer.bin").write_bytes(b"not a torch file")
    elif damage == "state":
        (checkpoint / "trainer_state.json").write_text("{ truncated")
    else:
        (checkpoint / "trainer_state.json").write_text("[1, 2]")
    assert train(tiny, output, "--max-steps", "6", "--resume-from-checkpoint", "latest") == 2
    err = capsys.readouterr().err
    assert named in err and "Traceback" not in err


def test_another_runs_checkpoint_is_refused_with_the_settings_named(tiny, trained, tmp_path, capsys):
    output = copy(trained, tmp_path)
    assert train(tiny, output, "--max-steps", "6", "--learning-rate", "5e-4", "--seed", "7",
                 "--resume-from-checkpoint", "latest") == 2
    err = capsys.readouterr().err
    assert "a checkpoint of another run" in err and "learning_rate (checkpoint 0.001, this run 0.0005)" in err
    assert "seed (checkpoint 42, this run 7)" in err
    other = tmp_path / "other.jsonl"
    other.write_text("".join(line + "\n" for line in DEMOS.read_text().splitlines()[:8]))
    assert train(tiny, output, "--max-steps", "6", "--resume-from-checkpoint", "latest", dataset=str(other)) == 2
    assert "dataset (checkpoint" in capsys.readouterr().err


def test_the_default_target_length_is_fitted_to_the_training_answers(tiny, tmp_path):
    """Generation at evaluation stops at --max-target-length: by default it fits the task's
    answers (GeoQuery-SQL's demonstrations), not a fixed 256 tokens."""
    from transformers import AutoTokenizer

    output = tmp_path / "model"
    assert main(["train", "--dataset", str(DEMOS), "--task", "geoquery_sql", "--model", str(tiny["llama"]),
                 "--output-dir", str(output), "--max-steps", "1", "--eval-strategy", "no"]) == 0
    config = json.loads((output / "symgen_task_model.json").read_text())
    tokenizer = AutoTokenizer.from_pretrained(tiny["llama"])
    task = get_task("geoquery_sql")
    rows = [json.loads(line) for line in DEMOS.read_text().splitlines()]
    longest = max(len(tokenizer(task.training_target(r), add_special_tokens=False)["input_ids"]) + 1 for r in rows)
    assert longest < config["max_target_length"] <= 1.25 * longest + 24 and config["max_target_length"] < 256
    assert config["training"]["hyperparameters"]["max_target_length"] == config["max_target_length"]
