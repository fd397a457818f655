"""The verifier and task API a third-party task needs (found by a task written from the README):
a real per-candidate time limit, per-worker setup, demonstrations checked against the knowledge,
the helpers task authors use exported, the row reaching prompt_context, and template hashes
that follow {% include %}."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from symgen_datasets.tasks import get_task
from symgen_datasets.verifiers import ExecutionResult
from symgen_datasets.verifiers.pool import PooledVerifier

KNOWLEDGE: dict = {}


def load_knowledge(value: str, marker_file: str) -> None:
    """Per-worker setup: what every candidate is checked against, loaded once per worker."""
    KNOWLEDGE["value"] = value
    with open(marker_file, "a") as handle:
        handle.write(f"{os.getpid()}\n")


def check_chunk(groups, options):
    outcomes = []
    for _, programs in groups:
        for program in programs:
            if program == "loop":
                while True:  # a candidate that never ends, in Python code
                    pass
            outcomes.append(ExecutionResult("ok", key=f"{KNOWLEDGE.get('value')}:{program}"))
    return outcomes


class LoopyVerifier(PooledVerifier):
    name = "loopy"
    chunk_function = staticmethod(check_chunk)

    def __init__(self, timeout_s: float, marker_file: str):
        self.timeout_s, self.marker_file = timeout_s, marker_file

    def worker_setup(self):
        return load_knowledge, ("geobase", self.marker_file)

    def describe(self) -> str:
        return "test verifier"


def test_a_hanging_candidate_is_a_timeout_at_its_own_limit_and_workers_are_set_up_once(tmp_path):
    marker = tmp_path / "setups"
    with LoopyVerifier(timeout_s=1.0, marker_file=str(marker)) as verifier:
        outcomes = verifier.execute(None, ["a", "loop", "b"])
        again = verifier.execute(None, ["c"] * 20)
    # a timeout at the candidate's own limit; the pool's backstop would have made it a `crash`
    assert [o.status for o in outcomes] == ["ok", "timeout", "ok"]
    assert "over the 1 s time limit" in outcomes[1].error
    assert [o.key for o in (outcomes[0], outcomes[2])] == ["geobase:a", "geobase:b"]
    assert all(o.key == "geobase:c" for o in again)
    setups = marker.read_text().split()
    assert len(setups) == len(set(setups)) <= os.cpu_count()  # once per worker process


def test_a_demonstration_naming_an_unknown_database_is_refused(tmp_path):
    task = get_task("geoquery_sql")
    rows = [json.loads(line) for line in (task.packaged / "10_shot.jsonl").read_text().splitlines()]
    rows[3]["db_id"] = "no_such_db"
    demos = tmp_path / "demos.jsonl"
    demos.write_text("".join(json.dumps(r) + "\n" for r in rows))
    done = subprocess.run([sys.executable, "-m", "symgen_datasets.cli", "generate", "geoquery_sql", "--demos", str(demos),
                           "--dry-run", "--output", str(tmp_path / "out")], capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr[-2000:]
    assert f"{demos} line 4" in done.stderr and "no_such_db" in done.stderr


def test_task_authors_helpers_are_exported():
    from symgen_datasets.tasks import InputError, check_aligned, fenced_code

    assert fenced_code("```sql\nSELECT 1\n```").strip() == "SELECT 1"
    with pytest.raises(ValueError):
        check_aligned([1, 2], [1])
    assert issubclass(InputError, Exception)


def test_prompt_context_receives_the_row():
    base = get_task("nl2bash")
    seen = []

    @dataclasses.dataclass(frozen=True)
    class Contextual(type(base)):
        def prompt_context(self, knowledge, row=None):
            seen.append(row)
            return {}

    task = Contextual(**{f.name: getattr(base, f.name) for f in dataclasses.fields(base)})
    knowledge = task.load_knowledge(task.options_with_defaults({}))
    demos = task.load_demonstrations()
    task.answer_prompt({"nl": "list all files"}, knowledge, demos, lambda text: len(text.split()))
    assert seen == [{"nl": "list all files"}]


def test_a_template_hash_follows_its_includes(tmp_path, monkeypatch):
    from symgen_datasets import prompts

    package = tmp_path / "hashpkg"
    (package / "prompts").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "prompts" / "main.j2").write_text("{% include 'schema.j2' %}\nQuestion: {{ question }}\n")
    (package / "prompts" / "schema.j2").write_text("CREATE TABLE a (x)\n")
    (package / "prompts" / "alone.j2").write_text("Question: {{ question }}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    before, alone = prompts.template_hash("main.j2", "hashpkg"), prompts.template_hash("alone.j2", "hashpkg")
    (package / "prompts" / "schema.j2").write_text("CREATE TABLE a (x, y)\n")  # only the included template changes
    assert prompts.template_hash("main.j2", "hashpkg") != before
    assert prompts.template_hash("alone.j2", "hashpkg") == alone
    import hashlib

    assert alone == hashlib.sha256(b"Question: {{ question }}\n").hexdigest()[:12]  # no include: as before
    assert set(prompts.template_sources("text_to_sql_answer.j2")) >= {"text_to_sql_answer.j2", "text_to_sql_schema.j2"}
