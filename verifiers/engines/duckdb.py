"""DuckDB files, attached read-only to an in-memory DuckDB whose external access is switched off.

Layers, any of which stops a write on its own except where noted:

1. the statement guard (:mod:`.guard`): one ``SELECT`` query on the database's own tables,
   allow-listed functions only (no ``read_csv``, ``COPY``, ``INSTALL``/``LOAD``, ``ATTACH``);
2. the file is attached ``READ_ONLY``: every write, schema change or ``CHECKPOINT`` fails;
3. ``enable_external_access = false`` and ``lock_configuration = true`` after the attachment:
   no file is read or written besides the attached database (``read_csv('/etc/...')``,
   ``COPY ... TO``, ``FROM '/etc/passwd'``), no extension is installed or loaded, and no setting
   can be changed back; extension auto-install and auto-load are off from the start;
4. a watchdog thread interrupts a query at the time limit; each worker runs DuckDB on one thread with a
   memory limit.

The in-memory instance (not ``duckdb.connect(path)``) also keeps DuckDB's process-wide instance
cache out of the way of forked worker processes. A read-only attachment is the run's read view:
DuckDB refuses a writer while it is attached.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any, ClassVar

from ...errors import InputError
from . import Column, Engine, QueryError, QueryTimeout, TableInfo, Target, file_pattern, ids_from_pattern, normalise_rows

#: DuckDB's memory limit in a worker.
WORKER_MEMORY_LIMIT = "1GB"


def _open(path: str, threads: int = 1):
    """An in-memory DuckDB with ``path`` attached read-only as ``db`` and external access off."""
    import duckdb

    connection = duckdb.connect(":memory:", config={
        "threads": threads, "memory_limit": WORKER_MEMORY_LIMIT, "autoinstall_known_extensions": False,
        "autoload_known_extensions": False, "allow_community_extensions": False,
    })
    literal = "'" + path.replace("'", "''") + "'"
    connection.execute(f"ATTACH {literal} AS db (READ_ONLY)")
    connection.execute("USE db")
    connection.execute("SET enable_external_access = false")
    connection.execute("SET lock_configuration = true")
    return connection


class DuckDBEngine(Engine):
    """DuckDB (sqlglot dialect ``duckdb``). The URL is ``duckdb:///DIR/{db_id}.duckdb`` (one file
    per db_id) or names one file (its stem is the db_id)."""

    family: ClassVar[str] = "duckdb"
    pretty_name: ClassVar[str] = "DuckDB"
    dialect: ClassVar[str] = "duckdb"
    schemes: ClassVar[tuple[str, ...]] = ("duckdb",)
    safety: ClassVar[tuple[str, ...]] = (
        "statement guard: one SELECT query, the database's own tables only, allow-listed functions only",
        "the file attached READ_ONLY",
        "enable_external_access = false, lock_configuration = true, no extension install or load",
        "a watchdog thread interrupts a query at the time limit; one thread and 1 GB per worker",
    )

    def __init__(self, url: str):
        super().__init__(url)
        self.pattern = file_pattern(url)
        self._connections: dict[str, Any] = {}
        self._tables: dict[str, list[TableInfo]] = {}

    def path(self, db_id: str) -> Path:
        """The file of ``db_id``."""
        return Path(self.pattern.replace("{db_id}", db_id))

    def _connection(self, db_id: str):
        connection = self._connections.get(db_id)
        if connection is None:
            import duckdb

            path = self.path(db_id)
            if not path.is_file():
                raise InputError(f"--db-url {self.shown_url}: no database {db_id!r} ({path} does not exist)")
            try:
                connection = self._connections[db_id] = _open(str(path), threads=2)
            except duckdb.Error as error:
                raise InputError(f"{path}: cannot open the DuckDB database {db_id!r} ({error})") from None
        return connection

    def list_databases(self) -> list[str]:
        if "{db_id}" not in self.pattern:
            return [Path(self.pattern).stem]
        found = ids_from_pattern(self.pattern)
        if not found:
            raise InputError(f"--db-url {self.shown_url}: no database file matches {self.pattern}")
        return found

    def version(self) -> str:
        import duckdb

        return f"DuckDB {duckdb.__version__}"

    def begin_run(self, db_ids) -> None:
        for db_id in db_ids:
            self._connection(db_id)

    def end_run(self) -> None:
        for connection in self._connections.values():
            connection.close()
        self._connections.clear()

    def tables(self, db_id: str) -> list[TableInfo]:
        if db_id in self._tables:
            return self._tables[db_id]
        connection = self._connection(db_id)
        names = [r[0] for r in connection.execute(
            "SELECT table_name FROM duckdb_tables() WHERE database_name = 'db' AND schema_name = 'main' "
            "ORDER BY table_oid").fetchall()]
        tables = []
        for name in names:
            columns = connection.execute(
                "SELECT column_name, data_type FROM duckdb_columns() WHERE database_name = 'db' AND "
                "schema_name = 'main' AND table_name = ? ORDER BY column_index", [name]).fetchall()
            key: tuple[str, ...] = ()
            foreign = []
            for kind, own, referenced_table, referenced in connection.execute(
                    "SELECT constraint_type, constraint_column_names, referenced_table, referenced_column_names "
                    "FROM duckdb_constraints() WHERE database_name = 'db' AND schema_name = 'main' AND table_name = ? "
                    "AND constraint_type IN ('PRIMARY KEY', 'FOREIGN KEY') ORDER BY constraint_index", [name]).fetchall():
                if kind == "PRIMARY KEY":
                    key = tuple(own)
                else:
                    foreign.append((tuple(own), referenced_table, tuple(referenced)))
            tables.append(TableInfo(name, tuple(Column(c, t) for c, t in columns), key, tuple(foreign)))
        self._tables[db_id] = tables
        return tables

    @staticmethod
    def _name(table: str) -> str:
        return '"' + table.replace('"', '""') + '"'

    def count_rows(self, db_id: str, table: str) -> int:
        return self._connection(db_id).execute(f"SELECT count(*) FROM {self._name(table)}").fetchone()[0]

    def rows(self, db_id: str, table: str, offset: int, limit: int) -> list[tuple]:
        rows = self._connection(db_id).execute(
            f"SELECT * FROM {self._name(table)} ORDER BY rowid LIMIT ? OFFSET ?", [limit, offset]).fetchall()
        return normalise_rows(rows)

    def target(self, db_id: str, timeout_s: float) -> Target:
        names = frozenset(t.name.lower() for t in self.tables(db_id))
        return Target(self.family, str(self.path(db_id).resolve()), None, names, timeout_s)

    @classmethod
    def connect(cls, target: Target) -> "_Session":
        import duckdb

        try:
            return _Session(_open(target.location), target)
        except duckdb.Error as error:
            raise QueryError(f"cannot open {target.location}: {error}") from None

    @classmethod
    def fetch(cls, connection: "_Session", query: str, timeout_s: float, max_rows: int) -> list[tuple]:
        return connection.fetch(query, timeout_s, max_rows)


class _Watchdog:
    """One thread per connection that interrupts the running query at its deadline (cheaper than
    a timer thread per query)."""

    def __init__(self, connection):
        self.connection = connection
        self.deadline: float | None = None
        self.condition = threading.Condition()
        threading.Thread(target=self._watch, daemon=True).start()

    def _watch(self) -> None:
        with self.condition:
            while self.connection is not None:
                if self.deadline is None:
                    self.condition.wait()
                    continue
                left = self.deadline - time.monotonic()
                if left > 0:
                    self.condition.wait(left)
                    continue
                self.connection.interrupt()
                self.deadline = None

    def arm(self, seconds: float) -> None:
        with self.condition:
            self.deadline = time.monotonic() + seconds
            self.condition.notify()

    def disarm(self) -> bool:
        """Stop watching; ``True`` when the deadline had passed (the query was interrupted)."""
        with self.condition:
            fired = self.deadline is None
            self.deadline = None
            return fired


class _Session:
    def __init__(self, connection, target: Target):
        self.connection = connection
        self.target = target
        self.watchdog = _Watchdog(connection)

    def close(self) -> None:
        """Detach the file, close the in-memory instance and end the watchdog."""
        with self.watchdog.condition:
            self.watchdog.connection = None
            self.watchdog.condition.notify()
        self.connection.close()

    def fetch(self, query: str, timeout_s: float, max_rows: int) -> list[tuple]:
        import duckdb

        from . import guard

        guard.check_query(query, DuckDBEngine.dialect, self.target.tables)
        self.watchdog.arm(timeout_s)
        try:
            cursor = self.connection.execute(query.strip().rstrip(";"))
            rows = cursor.fetchmany(max_rows + 1)
        except duckdb.InterruptException:
            self.watchdog.disarm()
            raise QueryTimeout(f"over the {timeout_s:g} s time limit") from None
        except duckdb.Error as error:
            if self.watchdog.disarm():
                raise QueryTimeout(f"over the {timeout_s:g} s time limit") from None
            raise QueryError(str(error).splitlines()[0]) from None
        except (ValueError, OverflowError, MemoryError) as error:
            self.watchdog.disarm()
            raise QueryError(f"{type(error).__name__}: {error}") from None
        if self.watchdog.disarm():
            raise QueryTimeout(f"over the {timeout_s:g} s time limit")
        return normalise_rows(rows)
