"""Task knowledge for text-to-SQL: SQLite databases, their schemas and example rows."""

from __future__ import annotations

import random
import re
import sqlite3
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from ..errors import InputError
from ..verifiers import connect_readonly

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
        return [
            self._connection.execute(f'SELECT * FROM "{table.name}" LIMIT 1 OFFSET ?', (o,)).fetchone()
            for o in offsets
        ]

    def matching_rows(self, table: Table, question: str, k: int) -> list[tuple]:
        """The ``k`` rows whose cell values occur most often in ``question`` (SymGen's
        answer-generation prompt shows rows relevant to the question); ties and the remainder
        keep table order. Only the first :data:`MAX_SCANNED_ROWS` rows are scanned."""
        rows = self._scanned.get(table.name)
        if rows is None:
            rows = self._connection.execute(
                f'SELECT * FROM "{table.name}" LIMIT {MAX_SCANNED_ROWS}'
            ).fetchall()
            self._scanned[table.name] = rows
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


class DatabaseDirectory:
    """A folder of SQLite databases laid out as Spider's: ``<dir>/<db_id>/<db_id>.sqlite``.

    Args:
        root: the folder.

    Raises:
        InputError: the folder does not exist or holds no database.
    """

    def __init__(self, root: str | Path):
        self.root = Path(root)
        if not self.root.is_dir():
            raise InputError(
                f"--db-dir {self.root}: not a folder; expected a folder of <db_id>/<db_id>.sqlite"
            )
        self.db_ids = sorted(
            p.name for p in self.root.iterdir() if (p / f"{p.name}.sqlite").is_file()
        )
        if not self.db_ids:
            raise InputError(
                f"--db-dir {self.root}: no database found; expected files <db_id>/<db_id>.sqlite"
            )
        self._open: dict[str, Database] = {}

    def path(self, db_id: str) -> Path:
        return self.root / db_id / f"{db_id}.sqlite"

    def get(self, db_id: str, where: str | None = None) -> Database:
        """The database ``db_id``.

        Args:
            where: the file and line that named it, for the error message.

        Raises:
            InputError: no ``<root>/<db_id>/<db_id>.sqlite`` exists (or it is not a database).
        """
        if db_id not in self._open:
            path = self.path(db_id)
            if not path.is_file():
                prefix = f"{where}: " if where else ""
                raise InputError(
                    f"{prefix}unknown db_id {db_id!r}: {path} does not exist; pass the folder that "
                    f"holds it with --db-dir (this one has {len(self.db_ids)} databases)"
                )
            self._open[db_id] = Database(db_id, path)
        return self._open[db_id]
