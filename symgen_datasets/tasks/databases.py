"""Task knowledge for text-to-SQL: SQLite databases, their schemas and example rows.

Generated SQL runs on connections opened with SQLite's ``immutable=1`` (see
:func:`~symgen_datasets.verifiers.connect_readonly`), which skip locking and the write-ahead log:
on a file that another process is writing, they would read uncommitted pages, or miss committed
changes still in a ``-wal`` file. So a run never executes on the user's files: a
:class:`DatabaseDirectory` hands out **snapshots**, copies made once per run with SQLite's
backup API from a read-only connection that honours locks and the WAL, so every query of the
run sees the same committed state.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import sqlite3
import tempfile
import time
from contextlib import closing
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from urllib.parse import quote

from ..errors import BusyError, InputError
from ..verifiers import connect_readonly
from .base import TaskKnowledge

#: How long a snapshot waits for another process's write to end (seconds) before it refuses.
LOCK_WAIT_S = 30.0

#: Cell values longer than this are cut in prompts (characters).
MAX_VALUE_CHARS = 40
#: Rows scanned per table when looking for rows that match a question.
MAX_SCANNED_ROWS = 2000


@dataclass(frozen=True)
class Table:
    """One table: its name, its ``CREATE TABLE`` statement and its column names."""

    name: str
    create: str
    columns: tuple[str, ...]


def _cell(value: object) -> str:
    text = "NULL" if value is None else str(value)
    text = " ".join(text.split())
    return text if len(text) <= MAX_VALUE_CHARS else text[: MAX_VALUE_CHARS - 3] + "..."


def format_rows(rows: list[tuple]) -> list[str]:
    """Rows as tab-separated lines for a prompt, long values cut to :data:`MAX_VALUE_CHARS`."""
    return ["\t".join(_cell(value) for value in row) for row in rows]


class Database:
    """A SQLite database of a text-to-SQL task, opened read-only.

    Args:
        db_id: the database name (Spider's ``db_id``).
        path: the ``.sqlite`` file.

    Raises:
        InputError: the file cannot be opened as a SQLite database.
    """

    def __init__(self, db_id: str, path: Path):
        self.db_id = db_id
        self.path = Path(path)
        try:
            self._connection = connect_readonly(self.path)
            self._connection.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except sqlite3.Error as error:
            raise InputError(f"{self.path}: cannot open database {db_id!r} ({error})") from None
        self._scanned: dict[str, list[tuple]] = {}

    @cached_property
    def tables(self) -> list[Table]:
        """User tables in schema order (``sqlite_*`` tables excluded)."""
        rows = self._connection.execute(
            "SELECT name, sql FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' "
            "AND sql IS NOT NULL ORDER BY rowid"
        ).fetchall()
        tables = []
        for name, sql in rows:
            columns = tuple(r[1] for r in self._connection.execute(f'PRAGMA table_info("{name}")'))
            create = "\n".join(line.rstrip() for line in sql.strip().splitlines() if line.strip())
            tables.append(Table(name, create, columns))
        return tables

    def _count(self, table: Table) -> int:
        return self._connection.execute(f'SELECT count(*) FROM "{table.name}"').fetchone()[0]

    def random_rows(self, table: Table, k: int, rng: random.Random) -> list[tuple]:
        """``k`` rows drawn at random (without replacement, in table order) by ``rng``."""
        total = self._count(table)
        offsets = sorted(rng.sample(range(total), min(k, total)))
        return [self._row_at(table, o) for o in offsets]

    def _row_at(self, table: Table, offset: int) -> tuple:
        return self._connection.execute(f'SELECT * FROM "{table.name}" LIMIT 1 OFFSET ?', (offset,)).fetchone()

    def _scan(self, table: Table) -> list[tuple]:
        return self._connection.execute(f'SELECT * FROM "{table.name}" LIMIT {MAX_SCANNED_ROWS}').fetchall()

    def matching_rows(self, table: Table, question: str, k: int) -> list[tuple]:
        """The ``k`` rows whose cell values occur most often in ``question`` (SymGen's
        answer-generation prompt shows rows relevant to the question); ties and the remainder
        keep table order. Only the first :data:`MAX_SCANNED_ROWS` rows are scanned."""
        rows = self._scanned.get(table.name)
        if rows is None:
            rows = self._scanned[table.name] = self._scan(table)
        words = set(re.findall(r"\w+", question.lower()))
        text = " " + " ".join(re.findall(r"\w+", question.lower())) + " "

        def score(row: tuple) -> int:
            hits = 0
            for value in row:
                if value is None:
                    continue
                cell = " ".join(re.findall(r"\w+", str(value).lower()))
                if not cell:
                    continue
                if (" " in cell and f" {cell} " in text) or cell in words:
                    hits += 1
            return hits

        ranked = sorted(range(len(rows)), key=lambda i: (-score(rows[i]), i))
        return [rows[i] for i in ranked[:k]]


def _open_committed(path: Path) -> sqlite3.Connection:
    """A read-only connection to ``path`` that honours other processes' locks and reads the
    write-ahead log (not ``immutable``): it sees the last committed state. Only symgen's own
    statements run on it."""
    return sqlite3.connect(f"file:{quote(str(path.resolve()))}?mode=ro", uri=True, timeout=0.1)


def _busy(path: Path, waited_s: float) -> BusyError:
    return BusyError(
        f"{path}: the database is being written by another process (still locked after {waited_s:g} s); "
        "run again once the write is finished, or point --db-dir at a copy"
    )


def snapshot_database(source: Path, target: Path, lock_wait_s: float | None = None) -> Path:
    """Copy the committed state of the SQLite database ``source`` to ``target`` (SQLite's backup
    API: a page-for-page copy, so rowids and row order are those of the source).

    The copy waits for a write in progress in another process to end, up to ``lock_wait_s``
    seconds (default :data:`LOCK_WAIT_S`); it is written to a temporary file and renamed, so
    ``target`` is either whole or absent.

    Raises:
        BusyError: the database stayed locked by a writer for ``lock_wait_s`` seconds.
        InputError: the file cannot be read as a SQLite database.
    """
    wait = LOCK_WAIT_S if lock_wait_s is None else lock_wait_s
    deadline = time.monotonic() + wait
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.partial-{os.getpid()}")

    def progress(status: int, remaining: int, total: int) -> None:
        if status in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED) and time.monotonic() > deadline:
            raise _busy(source, wait)

    try:
        with closing(_open_committed(source)) as reader, closing(sqlite3.connect(partial)) as writer:
            reader.backup(writer, pages=-1, progress=progress, sleep=0.05)
            writer.execute("PRAGMA journal_mode = DELETE")  # a plain file: immutable readers read it whole
        partial.replace(target)
    except sqlite3.Error as error:
        raise InputError(f"{source}: cannot read the database ({error})") from None
    finally:
        partial.unlink(missing_ok=True)
    return target


class DatabaseDirectory(TaskKnowledge):
    """A folder of SQLite databases laid out as Spider's: ``<dir>/<db_id>/<db_id>.sqlite``: the
    knowledge of a text-to-SQL task.

    The files in ``root`` are only read through SQLite's locks (:meth:`check`, and the snapshots).
    Prompts and generated queries read **snapshots** (see the module docstring), made the first
    time a database is asked for (:meth:`get`, :meth:`path`) into ``snapshot_dir``, or into a
    temporary folder removed with this object.

    Args:
        root: the folder.
        snapshot_dir: where snapshots go (a run's work folder); a snapshot already there is used
            as it is, so the caller clears the folder when a run starts.
        empty_results: the task option ``--empty-results``, for the verifier the task makes
            (``None``: the verifier's default).

    Raises:
        InputError: the folder does not exist or holds no database.
    """

    def __init__(self, root: str | Path, snapshot_dir: str | Path | None = None, empty_results: str | None = None,
                 db_ids: list[str] | None = None):
        from ..verifiers.engines.sqlite import SQLiteEngine

        self.root = Path(root)
        self.empty_results = empty_results
        self.engine = SQLiteEngine(f"sqlite:///{self.root.resolve()}/{{db_id}}/{{db_id}}.sqlite")
        if not self.root.is_dir():
            raise InputError(
                f"--db-dir {self.root}: not a folder; expected a folder of <db_id>/<db_id>.sqlite (a PostgreSQL "
                "server or DuckDB files: --db-url)"
            )
        self.db_ids = sorted(
            p.name for p in self.root.iterdir() if (p / f"{p.name}.sqlite").is_file()
        )
        if not self.db_ids:
            raise InputError(
                f"--db-dir {self.root}: no database found; expected files <db_id>/<db_id>.sqlite"
            )
        #: the databases question generation goes round (``--db-ids``; default: all)
        self.question_db_ids = list(db_ids) if db_ids else self.db_ids
        self._temporary = None if snapshot_dir is not None else tempfile.TemporaryDirectory(prefix="symgen-db-")
        self.snapshot_dir = Path(snapshot_dir if snapshot_dir is not None else self._temporary.name)
        self._open: dict[str, Database] = {}
        self._checked: set[str] = set()

    def check_record(self, record: dict, where: str) -> None:
        """:meth:`check` the database a row names (``db_id``)."""
        self.check(record["db_id"], where)

    def prepare(self, contexts) -> None:
        """Snapshot, afresh, every database the ``contexts`` name (``db_id``): one consistent
        committed state per database for the whole run."""
        self.cleanup()
        for db_id in sorted({context["db_id"] for context in contexts}):
            self.path(db_id)

    def cleanup(self) -> None:
        """Remove the snapshots, and the snapshot folder too when it was given (a run's own)."""
        self._open.clear()
        if self.snapshot_dir.is_dir():
            for entry in self.snapshot_dir.iterdir():
                shutil.rmtree(entry, ignore_errors=True)
        if self._temporary is None:
            try:
                self.snapshot_dir.rmdir()  # a run's own folder: gone when empty
            except OSError:
                pass

    def fingerprint(self, digest) -> None:
        """Every database's name and file content (the write-ahead log's too, when there is one)."""
        for db_id in self.db_ids:
            digest.update(db_id.encode())
            for path in (self.source_path(db_id), self.source_path(db_id).with_name(f"{db_id}.sqlite-wal")):
                if path.is_file():
                    with open(path, "rb") as handle:
                        for block in iter(lambda: handle.read(1 << 20), b""):
                            digest.update(block)

    def source_path(self, db_id: str) -> Path:
        """The user's file for ``db_id`` (never opened by generated code)."""
        return self.root / db_id / f"{db_id}.sqlite"

    def check(self, db_id: str, where: str | None = None) -> None:
        """Make sure ``db_id`` names a readable SQLite database with at least one table.

        Args:
            where: the file and line that named it, for the error message.

        Raises:
            InputError: no ``<root>/<db_id>/<db_id>.sqlite``, not a database, or no table (an
                empty or 0-byte file).
        """
        if db_id in self._checked:
            return
        prefix = f"{where}: " if where else ""
        path = self.source_path(db_id)
        if not path.is_file():
            raise InputError(
                f"{prefix}unknown db_id {db_id!r}: {path} does not exist; pass the folder that "
                f"holds it with --db-dir (this one has {len(self.db_ids)} databases)"
            )
        try:
            with closing(_open_committed(path)) as connection:
                connection.execute(f"PRAGMA busy_timeout = {int(LOCK_WAIT_S * 1000)}")
                tables = connection.execute("SELECT count(*) FROM sqlite_master WHERE type = 'table'").fetchone()[0]
        except sqlite3.OperationalError as error:
            if "locked" in str(error):
                raise _busy(path, LOCK_WAIT_S) from None
            raise InputError(f"{path}: cannot open database {db_id!r} ({error})") from None
        except sqlite3.Error as error:
            raise InputError(f"{path}: cannot open database {db_id!r} ({error})") from None
        if not tables:
            raise InputError(f"{path}: database {db_id!r} has no table (an empty or 0-byte file?); give the real database")
        self._checked.add(db_id)

    def path(self, db_id: str) -> Path:
        """The snapshot of ``db_id`` that queries run on (made now if needed; see
        :func:`snapshot_database` for its errors)."""
        target = self.snapshot_dir / db_id / f"{db_id}.sqlite"
        if not target.is_file():
            self.check(db_id)
            snapshot_database(self.source_path(db_id), target)
        return target

    def reaches(self, db_id: str) -> bool:
        """Whether the folder holds ``db_id``."""
        return db_id in self.db_ids

    def target(self, db_id: str, timeout_s: float | None = None) -> str:
        """What a verifier's worker opens for ``db_id``: the snapshot's path (see :meth:`path`)."""
        return str(self.path(db_id))

    def get(self, db_id: str, where: str | None = None) -> Database:
        """The database ``db_id`` (on its snapshot).

        Args:
            where: the file and line that named it, for the error message.

        Raises:
            InputError: see :meth:`check`.
            BusyError: see :func:`snapshot_database`.
        """
        if db_id not in self._open:
            self.check(db_id, where)
            self._open[db_id] = Database(db_id, self.path(db_id))
        return self._open[db_id]


class EngineDatabase(Database):
    """A database on a server or in a DuckDB file, read through its :class:`~symgen_datasets.
    verifiers.engines.Engine` (same interface as :class:`Database`: tables, example rows)."""

    def __init__(self, engine, db_id: str):  # noqa: D107 - no file to open
        self.db_id = db_id
        self.engine = engine
        self._scanned: dict[str, list[tuple]] = {}

    @cached_property
    def tables(self) -> list[Table]:
        """User tables in a stable order, with ``CREATE TABLE`` statements from introspection."""
        return [Table(t.name, t.create_statement(), tuple(c.name for c in t.columns)) for t in self.engine.tables(self.db_id)]

    def _count(self, table: Table) -> int:
        return self.engine.count_rows(self.db_id, table.name)

    def _row_at(self, table: Table, offset: int) -> tuple:
        return self.engine.rows(self.db_id, table.name, offset, 1)[0]

    def _scan(self, table: Table) -> list[tuple]:
        return self.engine.rows(self.db_id, table.name, 0, MAX_SCANNED_ROWS)


class EngineDatabases(TaskKnowledge):
    """The databases an ``--db-url`` reaches (PostgreSQL, DuckDB): the knowledge of a text-to-SQL
    task on the user's own engine.

    Args:
        url: the database URL (``{db_id}`` stands for a row's database; see
            :func:`~symgen_datasets.verifiers.engines.open_engine`).
        db_ids: the databases question generation goes round (``--db-ids``); default: every
            database the URL reaches (on PostgreSQL, those its role may connect to, without
            ``postgres`` and ``template*``).
        empty_results: the task option ``--empty-results``.

    Raises:
        InputError: an unknown URL scheme, a server that cannot be reached, or no database.
    """

    def __init__(self, url: str, db_ids: list[str] | None = None, empty_results: str | None = None):
        from ..verifiers.engines import open_engine

        self.engine = open_engine(url)
        self.empty_results = empty_results
        self.db_ids = list(db_ids) if db_ids else self.engine.list_databases()
        if not self.db_ids:
            raise InputError(f"--db-url {self.engine.shown_url}: no database found; name them with --db-ids a,b,c")
        self.question_db_ids = self.db_ids
        self._open: dict[str, EngineDatabase] = {}
        self._checked: set[str] = set()

    def check(self, db_id: str, where: str | None = None) -> None:
        """Make sure ``db_id`` can be reached and has at least one table.

        Raises:
            InputError: it cannot, naming ``where`` and the (redacted) URL.
        """
        if db_id in self._checked:
            return
        prefix = f"{where}: " if where else ""
        try:
            tables = self.engine.tables(db_id)
        except InputError as error:
            raise InputError(f"{prefix}db_id {db_id!r}: {error}") from None
        if not tables:
            raise InputError(f"{prefix}db_id {db_id!r}: the database has no table at {self.engine.shown_url}")
        self._checked.add(db_id)

    def check_record(self, record: dict, where: str) -> None:
        self.check(record["db_id"], where)

    def reaches(self, db_id: str) -> bool:
        """Whether ``db_id`` is one of the URL's databases (without raising)."""
        try:
            self.check(db_id)
        except InputError:
            return False
        return True

    def prepare(self, contexts) -> None:
        """Start the run's read view (see :meth:`Engine.begin_run`) of the contexts' databases."""
        self._open.clear()
        self.engine.begin_run(sorted({context["db_id"] for context in contexts}))

    def cleanup(self) -> None:
        self._open.clear()
        self.engine.end_run()

    def fingerprint(self, digest) -> None:
        """The engine, the redacted URL, and each database's schema and row counts (a server's
        content is not read whole; a resumed run on changed data is caught by the counts)."""
        digest.update(f"{self.engine.family}\x00{self.engine.shown_url}".encode())
        for db_id in self.db_ids:
            digest.update(db_id.encode())
            for table in self.engine.tables(db_id):
                digest.update(table.create_statement().encode())
                digest.update(str(self.engine.count_rows(db_id, table.name)).encode())

    def target(self, db_id: str, timeout_s: float = 5.0):
        """What a verifier's worker connects to for ``db_id`` (a :class:`~symgen_datasets.
        verifiers.engines.Target` inside the run's read view)."""
        return self.engine.target(db_id, timeout_s)

    def get(self, db_id: str, where: str | None = None) -> EngineDatabase:
        """The database ``db_id`` (see :meth:`check` for the errors)."""
        if db_id not in self._open:
            self.check(db_id, where)
            self._open[db_id] = EngineDatabase(self.engine, db_id)
        return self._open[db_id]
