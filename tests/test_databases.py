"""Databases that another process is writing: the verifier reads a consistent committed state
(a snapshot taken through SQLite's locks and write-ahead log) or refuses clearly, and never
changes the user's files."""

from __future__ import annotations

import hashlib
import json
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import datasets
import pytest

from symgen_datasets.cli import main
from symgen_datasets.verifiers import result_keys
from tests.llm_servers import LLMServer, last_question

KEYS = range(20)

#: Holds an uncommitted transaction whose pages spill to the database file (a cache of a few
#: pages, every row updated and more inserted), then rolls it back after argv[2] seconds.
WRITER = """
import sqlite3, sys, time
connection = sqlite3.connect(sys.argv[1], isolation_level=None)
connection.execute("PRAGMA cache_size = 2")
connection.execute("BEGIN")
connection.execute("UPDATE t SET v = 100")
connection.executemany("INSERT INTO t VALUES (?, 100, ?)", [(k % 20, "x" * 2000) for k in range(400)])
print("ready", flush=True)
time.sleep(float(sys.argv[2]))
connection.execute("ROLLBACK")
"""


def make_shop(db_dir: Path, wal: bool = False) -> Path:
    """``<db_dir>/shop/shop.sqlite``: 2,000 rows, 100 per key k in 0..19, each with v = 1."""
    path = db_dir / "shop" / "shop.sqlite"
    path.parent.mkdir(parents=True)
    with sqlite3.connect(path) as connection:
        if wal:
            connection.execute("PRAGMA journal_mode = WAL")
        connection.execute("CREATE TABLE t (k INTEGER, v INTEGER, pad TEXT)")
        connection.executemany("INSERT INTO t VALUES (?, 1, ?)", [(k % 20, "p" * 400) for k in range(2000)])
    connection.close()
    return path


def sum_per_key(prompt: str, parameters: dict, seed: int) -> tuple[str, list[float]]:
    """Answers "what is the total v for key K" with the right SQL."""
    question = last_question(prompt)
    match = re.search(r"key (\d+)", question or "")
    return (f"SELECT sum(v) FROM t WHERE k = {match.group(1)}" if match else "SELECT 1") + "\n\n", [-0.1]


def run(tmp_path: Path, db_dir: Path, server: LLMServer) -> int:
    questions = tmp_path / "questions.jsonl"
    questions.write_text("".join(json.dumps({"question": f"what is the total v for key {k}", "db_id": "shop"}) + "\n" for k in KEYS))
    return main(["generate", "spider", "--db-dir", str(db_dir), "--questions", str(questions), "--generator", f"tgi:{server.url}",
                 "--num-samples", "3", "--min-votes", "2", "--sampling", "all", "--output", str(tmp_path / "out")])


def results(tmp_path: Path) -> list[str]:
    candidates = datasets.load_dataset(str(tmp_path / "out"), "candidates", split="train")
    return [key for row in candidates for key in row["candidate_result"]]


def immutable_sum(path: Path) -> int:
    """What a reader that ignores locks and the WAL (``immutable=1``) sees."""
    connection = sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True)
    try:
        return connection.execute("SELECT sum(v) FROM t").fetchone()[0]
    finally:
        connection.close()


@pytest.fixture()
def writer():
    processes = []

    def start(path: Path, hold_s: float) -> subprocess.Popen:
        process = subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(hold_s)], stdout=subprocess.PIPE, text=True)
        assert process.stdout.readline().strip() == "ready"
        processes.append(process)
        return process

    yield start
    for process in processes:
        process.kill()
        process.wait()


def test_an_uncommitted_write_is_waited_for_and_never_read(tmp_path, writer):
    db_dir = tmp_path / "dbs"
    path = make_shop(db_dir)
    writing = writer(path, 1.5)
    assert immutable_sum(path) != 2000  # the uncommitted pages are in the file: the case to guard against
    with LLMServer(sum_per_key) as server:
        assert run(tmp_path, db_dir, server) == 0
    assert writing.wait(timeout=60) == 0  # it rolled back
    committed = result_keys([(100,)], ordered=False)
    assert results(tmp_path) == [committed] * 3 * len(KEYS)


def test_a_database_locked_for_too_long_is_refused_before_any_request(tmp_path, writer, monkeypatch, capsys):
    monkeypatch.setattr("symgen_datasets.tasks.databases.LOCK_WAIT_S", 1.0)
    db_dir = tmp_path / "dbs"
    path = make_shop(db_dir)
    writer(path, 120)
    with LLMServer(sum_per_key) as server:
        assert run(tmp_path, db_dir, server) == 2
    assert server.requests == 0
    err = capsys.readouterr().err
    assert f"{path}: the database is being written by another process (still locked after 1 s)" in err
    assert not (tmp_path / "out").exists()


def test_committed_changes_still_in_the_write_ahead_log_are_read(tmp_path):
    db_dir = tmp_path / "dbs"
    path = make_shop(db_dir, wal=True)
    connection = sqlite3.connect(path, isolation_level=None)
    connection.execute("PRAGMA wal_autocheckpoint = 0")
    connection.execute("UPDATE t SET v = 2")  # committed, but only in shop.sqlite-wal while this connection is open
    try:
        assert immutable_sum(path) == 2000  # a reader that skips the WAL misses the change
        files = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in path.parent.iterdir()}
        with LLMServer(sum_per_key) as server:
            assert run(tmp_path, db_dir, server) == 0
        assert results(tmp_path) == [result_keys([(200,)], ordered=False)] * 3 * len(KEYS)
        assert {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in path.parent.iterdir()
                if not p.name.endswith("-shm")} == {name: digest for name, digest in files.items() if not name.endswith("-shm")}
    finally:
        connection.close()
