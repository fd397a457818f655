"""SQLite: files read through immutable, read-only connections (see
:func:`~symgen_datasets.verifiers.sqlite.connect_readonly`); a run's read view is a snapshot file
per database (:class:`~symgen_datasets.tasks.databases.DatabaseDirectory`)."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import ClassVar

from ...errors import InputError
from . import Column, Engine, QueryError, QueryTimeout, TableInfo, Target, file_pattern, ids_from_pattern


class SQLiteEngine(Engine):
    """SQLite (sqlglot dialect ``sqlite``). The URL is ``sqlite:///DIR/{db_id}/{db_id}.sqlite``
    (Spider's layout, what ``--db-dir DIR`` means) or one file ``sqlite:///PATH.sqlite``."""

    family: ClassVar[str] = "sqlite"
    pretty_name: ClassVar[str] = "SQLite"
    dialect: ClassVar[str] = "sqlite"
    schemes: ClassVar[tuple[str, ...]] = ("sqlite",)
    safety: ClassVar[tuple[str, ...]] = (
        "a snapshot of each database, opened read-only and immutable",
        "PRAGMA query_only",
        "an authorizer that allows only reads (no ATTACH, no writes, no file functions)",
        "SQLite's progress handler stops a query at the time limit",
    )

    def __init__(self, url: str):
        super().__init__(url)
        self.pattern = file_pattern(url)

    def _path(self, db_id: str) -> Path:
        return Path(self.pattern.replace("{db_id}", db_id))

    def list_databases(self) -> list[str]:
        if "{db_id}" not in self.pattern:
            return [Path(self.pattern).stem]
        return ids_from_pattern(self.pattern)

    def version(self) -> str:
        return f"SQLite {sqlite3.sqlite_version}"

    def _open(self, db_id: str) -> sqlite3.Connection:
        from ..sqlite import connect_readonly

        try:
            return connect_readonly(self._path(db_id))
        except sqlite3.Error as error:
            raise InputError(f"{self._path(db_id)}: cannot open database {db_id!r} ({error})") from None

    def tables(self, db_id: str) -> list[TableInfo]:
        connection = self._open(db_id)
        try:
            names = [r[0] for r in connection.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY rowid")]
            tables = []
            for name in names:
                info = connection.execute(f'PRAGMA table_info("{name}")').fetchall()
                keys = tuple(r[1] for r in sorted((r for r in info if r[5]), key=lambda r: r[5]))
                foreign: dict[int, list] = {}
                for row in connection.execute(f'PRAGMA foreign_key_list("{name}")'):
                    foreign.setdefault(row[0], [row[2], [], []])
                    foreign[row[0]][1].append(row[3])
                    foreign[row[0]][2].append(row[4] or "")
                tables.append(TableInfo(name, tuple(Column(r[1], r[2] or "") for r in info), keys,
                                        tuple((tuple(c), t, tuple(r)) for t, c, r in foreign.values())))
            return tables
        finally:
            connection.close()

    def count_rows(self, db_id: str, table: str) -> int:
        connection = self._open(db_id)
        try:
            return connection.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0]
        finally:
            connection.close()

    def rows(self, db_id: str, table: str, offset: int, limit: int) -> list[tuple]:
        connection = self._open(db_id)
        try:
            return connection.execute(f'SELECT * FROM "{table}" LIMIT ? OFFSET ?', (limit, offset)).fetchall()
        finally:
            connection.close()

    def target(self, db_id: str, timeout_s: float) -> Target:
        return Target(self.family, str(self._path(db_id)), timeout_s=timeout_s)

    @classmethod
    def connect(cls, target: Target) -> sqlite3.Connection:
        from ..sqlite import connect_readonly

        try:
            return connect_readonly(target.location)
        except sqlite3.Error as error:
            raise QueryError(f"cannot open {target.location}: {error}") from None

    @classmethod
    def fetch(cls, connection: sqlite3.Connection, query: str, timeout_s: float, max_rows: int) -> list[tuple]:
        from ..sqlite import fetch_rows

        deadline = time.monotonic() + timeout_s
        connection.set_progress_handler(lambda: int(time.monotonic() > deadline), 1000)
        try:
            return fetch_rows(connection, query, max_rows)
        except sqlite3.OperationalError as error:
            if "interrupted" in str(error):
                raise QueryTimeout(f"over the {timeout_s:g} s time limit") from None
            raise QueryError(str(error)) from None
        except (sqlite3.Error, ValueError, OverflowError, MemoryError) as error:
            raise QueryError(f"{type(error).__name__}: {error}") from None
        finally:
            connection.set_progress_handler(None, 0)
