"""Scale-out: `accelerate launch --num_processes 2` writes the dataset one process writes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import datasets

from symgen_datasets.publish import read_folder_card
from tests.llm_servers import LLMServer

ROOT = Path(__file__).resolve().parent.parent


def run(command: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=ROOT, env=env)
    assert done.returncode == 0, done.stderr[-4000:]
    return done


def table(folder: Path, config: str) -> list[dict]:
    return datasets.load_dataset(str(folder), config, split="train").to_list()


def test_two_processes_over_two_servers_write_the_single_process_dataset(tmp_path, oracle):
    common = ["generate", "geoquery_sql", "--num-questions", "12", "--num-samples", "6", "--min-votes", "2",
              "--seed", "3", "--concurrency", "8"]
    with LLMServer(oracle, latency_s=0.01) as first, LLMServer(oracle, latency_s=0.01) as second:
        run([sys.executable, "-m", "symgen_datasets.cli", *common, "--generator", f"tgi:{first.url}",
             "--output", str(tmp_path / "single")], tmp_path)
        single_requests = first.requests
        launched = run([
            sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
            "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
            "-m", "symgen_datasets.cli", *common, "--generator", f"tgi:{first.url},{second.url}",
            "--output", str(tmp_path / "two"),
        ], tmp_path)
        two_requests = first.requests - single_requests + second.requests
    single, two = tmp_path / "single", tmp_path / "two"
    for config in ("default", "candidates"):
        assert table(two, config) == table(single, config)
    assert len(table(single, "candidates")) == 12
    meta_single, meta_two = read_folder_card(single)[0], read_folder_card(two)[0]
    assert meta_two["counts"] == meta_single["counts"] and meta_two["vote_histogram"] == meta_single["vote_histogram"]
    assert launched.stdout.count("questions kept") == 1  # one summary, from the main process
    # both servers answered, and no request was repeated: the only extra one is the second
    # process's health check
    assert second.requests > 0
    assert two_requests == single_requests + 1
    shards = sorted(p.name for p in (tmp_path / ".two.work" / "arrow").iterdir() if p.name.startswith("rank-"))
    assert shards == ["rank-0-of-2", "rank-1-of-2"]
