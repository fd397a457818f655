"""A task defined in a package of its own (examples/symgen-task-arith), installed with pip, shows
up in `symgen tasks` and generates a verified dataset end to end, with no change to this
repository."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import datasets

from tests.llm_servers import LLMServer, OracleResponder

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "symgen-task-arith"

QUESTIONS = {
    "what is eight times nine minus four": "8 * 9 - 4",
    "how much is two hundred divided by eight": "200 / 8",
    "what is the sum of thirty, forty and fifty five": "30 + 40 + 55",
    "what is three to the power of five": "3 ** 5",
    "how many seconds are there in seven minutes": "7 * 60",
    "what is the remainder of forty divided by six": "40 % 6",
    "what is five times the difference of twenty and eleven": "5 * (20 - 11)",
    "how much is one third of ninety nine": "99 / 3",
}


def test_a_task_from_its_own_pip_package_is_listed_and_generates(tmp_path):
    source = tmp_path / "source"
    shutil.copytree(EXAMPLE, source)  # build files stay out of the repository
    site = tmp_path / "site"
    install = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                              "--target", str(site), str(source)], capture_output=True, text=True, timeout=600)
    assert install.returncode == 0, install.stderr[-2000:]
    env = {**os.environ, "PYTHONPATH": str(site)}

    def symgen(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "symgen_datasets.cli", *args], env=env, capture_output=True,
                              text=True, timeout=600)

    listed = symgen("tasks")
    assert listed.returncode == 0, listed.stderr
    row = next(line for line in listed.stdout.splitlines() if line.startswith("arith "))
    assert "arithmetic" in row and "question -> expression" in row and " arith " in row and "symgen-arith 0.1.0" in row

    questions = tmp_path / "questions.jsonl"
    questions.write_text("".join(json.dumps({"question": q}) + "\n" for q in QUESTIONS))
    oracle = OracleResponder(QUESTIONS, corrupt=lambda answer, rng: answer + " *")
    out = tmp_path / "arith-synth"
    with LLMServer(oracle) as server:
        generated = symgen("generate", "arith", "--questions", str(questions), "--generator", f"tgi:{server.url}",
                           "--num-samples", "8", "--min-votes", "3", "--output", str(out))
    assert generated.returncode == 0, generated.stderr[-3000:]
    rows = datasets.load_dataset(str(out), split="train").to_list()
    assert len(rows) >= 6 and list(rows[0])[:2] == ["question", "expression"]
    assert sum(eval(r["expression"]) == eval(QUESTIONS[r["question"]]) for r in rows) >= len(rows) - 1
    card = (out / "README.md").read_text()
    assert "Arithmetic expressions (synthetic, example plugin)" in card and "`arith`" in card
    verified = symgen("verify", str(out))
    assert verified.returncode == 0 and "identical" in verified.stdout, verified.stdout + verified.stderr


def test_a_plugin_that_exits_on_import_does_not_end_symgen_tasks(tmp_path):
    site = tmp_path / "site"
    (site / "symgen_exits-0.1.dist-info").mkdir(parents=True)
    (site / "symgen_exits-0.1.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: symgen-exits\nVersion: 0.1\n")
    (site / "symgen_exits-0.1.dist-info" / "entry_points.txt").write_text("[symgen_datasets.tasks]\nexits = symgen_exits:TASK\n")
    (site / "symgen_exits.py").write_text("import sys\nsys.exit(3)\n")
    listed = subprocess.run([sys.executable, "-m", "symgen_datasets.cli", "tasks"], capture_output=True, text=True,
                            timeout=300, env={**os.environ, "PYTHONPATH": str(site)})
    assert listed.returncode == 0, listed.stderr[-2000:]
    row = next(line for line in listed.stdout.splitlines() if line.startswith("exits "))
    assert "cannot be loaded: task 'exits' from symgen-exits 0.1" in row and "SystemExit: 3" in row
    assert any(line.startswith("geoquery_sql ") for line in listed.stdout.splitlines())  # the others are listed
