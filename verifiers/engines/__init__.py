"""SQL engines: the one seam between text-to-SQL and the database that runs its queries.

Everything SQL-specific above this package (prompts, the agreement vote, execution accuracy, the
pipeline) is dialect-neutral: it asks an :class:`Engine` for

* the **dialect** (sqlglot's name) and a pretty name for prompts;
* **schema introspection** (tables, columns, types, primary and foreign keys) and **example
  rows**, for the informative prompt;
* a **consistent read view** for the whole run (SQLite: a snapshot file; PostgreSQL: an exported
  snapshot imported by every worker's ``REPEATABLE READ READ ONLY`` transaction; DuckDB: a
  read-only attachment of the file);
* **execution** of one query under a time limit, in a worker process, read-only, with the
  result **normalised** into plain Python values (``int``, ``float``, ``str``, ``bytes``,
  ``None``) so that :func:`~symgen_datasets.verifiers.sqlite.result_keys` and the execution
  accuracy compare results the same way on every engine.

A new engine (MySQL, ClickHouse...) is one module with an :class:`Engine` subclass, registered
under the entry-point group :data:`ENTRY_POINT_GROUP` (or listed in :func:`_engines` here). Engines are chosen by the URL's scheme (:func:`open_engine`):
``sqlite:///DIR/{db_id}/{db_id}.sqlite``, ``postgresql://USER@HOST:PORT/{db_id}``,
``duckdb:///DIR/{db_id}.duckdb``; ``{db_id}`` stands for a row's database.
"""

from __future__ import annotations

import datetime
import decimal
import re
import uuid
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, ClassVar, Iterable, Sequence

from ...errors import InputError
from ...redaction import redact_url


class QueryError(Exception):
    """A query failed (bad SQL, refused by a safety layer, a runtime error); the message says why."""


class QueryTimeout(QueryError):
    """A query ran past its time limit and was cancelled."""


@dataclass(frozen=True)
class Target:
    """What a worker process connects to for one database: picklable and hashable, so workers
    cache one connection per target.

    Attributes:
        family: the engine's :attr:`Engine.family` (``sqlite``, ``postgresql``, ``duckdb``).
        location: a file path (SQLite, DuckDB) or a libpq connection string (PostgreSQL).
        view: the consistent read view to join (PostgreSQL: an exported snapshot id); ``None``
            for a view of the worker's own.
        tables: the database's table names (lower case): the only tables a query may read on
            engines whose safety includes the statement guard; empty for SQLite.
        timeout_s: per-query time limit the connection is set up with (seconds).
        role: a role the worker's session switches to (PostgreSQL: ``pg_read_all_data`` when
            the URL's role is a superuser); ``None`` to keep the URL's.
    """

    family: str
    location: str
    view: str | None = None
    tables: frozenset[str] = field(default_factory=frozenset)
    timeout_s: float = 5.0
    role: str | None = None

    def __str__(self) -> str:  # error messages, logs: never the password
        return redact_url(self.location) if "://" in self.location else f"{self.family}:{self.location}"


@dataclass(frozen=True)
class Column:
    """One column: its name and declared type."""

    name: str
    type: str


@dataclass(frozen=True)
class TableInfo:
    """A table as introspected: columns, primary key, foreign keys ``(columns, table, columns)``."""

    name: str
    columns: tuple[Column, ...]
    primary_key: tuple[str, ...] = ()
    foreign_keys: tuple[tuple[tuple[str, ...], str, tuple[str, ...]], ...] = ()

    def create_statement(self) -> str:
        """A ``CREATE TABLE`` statement for prompts (the schema block SymGen's prompt shows)."""
        lines = [f"  {quote_identifier(c.name)} {c.type}" for c in self.columns]
        if self.primary_key:
            lines.append(f"  PRIMARY KEY ({', '.join(map(quote_identifier, self.primary_key))})")
        for columns, table, references in self.foreign_keys:
            lines.append(f"  FOREIGN KEY ({', '.join(map(quote_identifier, columns))}) REFERENCES "
                         f"{quote_identifier(table)}({', '.join(map(quote_identifier, references))})")
        return f"CREATE TABLE {quote_identifier(self.name)} (\n" + ",\n".join(lines) + "\n)"


def quote_identifier(name: str) -> str:
    """``name`` as written in SQL: bare when it is a plain lower-case word, else double-quoted."""
    if name.isidentifier() and name == name.lower() and name.isascii():
        return name
    return '"' + name.replace('"', '""') + '"'


def normalise_value(value: Any) -> Any:
    """A database value as the plain Python value results are compared by: ``Decimal`` becomes
    ``int`` when integral, else ``float``; ``bool`` becomes ``int``; dates and times their ISO
    text (``YYYY-MM-DD HH:MM:SS``, as SQLite stores them); ``memoryview`` becomes ``bytes``; UUIDs
    and other objects their text. ``int``, ``float``, ``str``, ``bytes`` and ``None`` stay."""
    if value is None or type(value) in (int, float, str, bytes):
        return value
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, decimal.Decimal):
        if not value.is_finite():
            return float(value)
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, datetime.datetime):
        return value.isoformat(sep=" ")
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, datetime.timedelta):
        return str(value)
    if isinstance(value, memoryview):
        return value.tobytes()
    if isinstance(value, (int, float, str, bytes)):  # subclasses (e.g. numpy scalars are not these)
        return value
    if isinstance(value, uuid.UUID):
        return str(value)
    return str(value)


def normalise_rows(rows: Sequence[Sequence[Any]]) -> list[tuple]:
    """Every value of ``rows`` through :func:`normalise_value` (rows of plain values are returned
    as tuples without copying values)."""
    plain = (int, float, str, bytes, type(None))
    out = []
    for row in rows:
        if all(type(v) in plain for v in row):
            out.append(tuple(row))
        else:
            out.append(tuple(map(normalise_value, row)))
    return out


class Engine(ABC):
    """One SQL database family.

    An instance stands for one URL (``{db_id}`` in it stands for a database); the main process
    uses it to list, introspect and sample databases and to hold the run's read view, and worker
    processes use its class methods :meth:`connect` and :meth:`fetch` on a :class:`Target`.

    Class attributes:
        family: the name engines are registered and recorded in cards by (``postgresql``).
        pretty_name: the name prompts and cards show (``PostgreSQL``).
        dialect: sqlglot's dialect name (``postgres``).
        schemes: URL schemes this engine answers to.
        safety: the layers that keep generated SQL from changing anything, for the card.
    """

    family: ClassVar[str] = ""
    pretty_name: ClassVar[str] = ""
    dialect: ClassVar[str] = ""
    schemes: ClassVar[tuple[str, ...]] = ()
    safety: ClassVar[tuple[str, ...]] = ()

    def __init__(self, url: str):
        self.url = url

    @property
    def shown_url(self) -> str:
        """The URL with its credentials redacted (for messages and cards)."""
        return redact_url(self.url)

    # --- main process ---------------------------------------------------------------------------

    @abstractmethod
    def list_databases(self) -> list[str]:
        """The db_ids the URL reaches (sorted).

        Raises:
            InputError: the server or files cannot be reached (the message names the URL, redacted).
        """

    @abstractmethod
    def version(self) -> str:
        """The engine's version (``PostgreSQL 15.18``)."""

    @abstractmethod
    def tables(self, db_id: str) -> list[TableInfo]:
        """The user tables of ``db_id`` in a stable order."""

    @abstractmethod
    def count_rows(self, db_id: str, table: str) -> int:
        """Rows in ``table``."""

    @abstractmethod
    def rows(self, db_id: str, table: str, offset: int, limit: int) -> list[tuple]:
        """``limit`` rows of ``table`` from ``offset``, in a stable order (the table's storage
        order), normalised (:func:`normalise_value`)."""

    def begin_run(self, db_ids: Sequence[str]) -> None:
        """Start the run's consistent read view of ``db_ids`` (before the first request)."""

    def end_run(self) -> None:
        """Release the read view."""

    @abstractmethod
    def target(self, db_id: str, timeout_s: float) -> Target:
        """What a worker connects to for ``db_id``, inside the run's read view."""

    # --- worker processes ---------------------------------------------------------------------

    @classmethod
    @abstractmethod
    def connect(cls, target: Target) -> Any:
        """A connection on which no statement can change anything (see :attr:`safety`); it has a
        ``close()`` method (a worker closes its oldest connections past a limit).

        Raises:
            QueryError: the database cannot be opened.
        """

    @classmethod
    @abstractmethod
    def fetch(cls, connection: Any, query: str, timeout_s: float, max_rows: int) -> list[tuple]:
        """Execute one query and fetch at most ``max_rows + 1`` normalised rows.

        Raises:
            QueryTimeout: past ``timeout_s`` (the query is cancelled, the connection survives).
            QueryError: the query failed or was refused.
        """


def file_pattern(url: str) -> str:
    """The file path pattern of a file engine's URL (``duckdb:///DIR/{db_id}.duckdb`` ->
    ``/DIR/{db_id}.duckdb``; ``{db_id}`` kept)."""
    from urllib.parse import unquote, urlsplit

    parts = urlsplit(url)
    return unquote(parts.netloc + parts.path)


def ids_from_pattern(pattern: str) -> list[str]:
    """The db_ids of the files a path pattern matches (``/DIR/{db_id}.duckdb``,
    ``/DIR/{db_id}/{db_id}.sqlite``): each ``{db_id}`` is the same name. Sorted."""
    from pathlib import Path

    head, _, tail = pattern.partition("{db_id}")
    folder = Path(head) if head.endswith("/") or not head else Path(head).parent
    prefix = "" if head.endswith("/") or not head else Path(head).name
    if not folder.is_dir():
        return []
    found = []
    for entry in folder.iterdir():
        name = entry.name
        if "/" in tail:
            db_id = name[len(prefix):] if name.startswith(prefix) else None
        else:
            db_id = name[len(prefix):len(name) - len(tail)] if name.startswith(prefix) and name.endswith(tail) \
                and len(name) > len(prefix) + len(tail) else None
        if db_id and Path(pattern.replace("{db_id}", db_id)).is_file():
            found.append(db_id)
    return sorted(found)


_QUOTED = re.compile(r"'(?:[^']|'')*'|\"((?:[^\"]|\"\")*)\"")


def sqlite_strings(query: str, names: Iterable[str] | None = None) -> str:
    """``query`` (SQLite) with double-quoted words that name no table or column written as string
    literals, as SQLite reads them (``WHERE country = "France"``; about 140 Spider gold queries
    rely on this). Without ``names``, every double-quoted word is taken for a string (Spider's
    usage). Single-quoted literals are left alone."""
    known = None if names is None else {name.lower() for name in names}

    def replace(match: re.Match) -> str:
        inner = match.group(1)
        if inner is None or (known is not None and inner.replace('""', '"').lower() in known):
            return match.group(0)
        return "'" + inner.replace('""', '"').replace("'", "''") + "'"

    return _QUOTED.sub(replace, query) if '"' in query else query


def transpile_query(query: str, dialect: str, names: Iterable[str] | None = None) -> str:
    """A SQLite query in ``dialect`` (sqlglot's name), double-quoted strings read as SQLite reads
    them (:func:`sqlite_strings`).

    Raises:
        ValueError: sqlglot cannot parse or translate it.
    """
    import sqlglot
    from sqlglot.errors import ErrorLevel, SqlglotError

    try:
        out = sqlglot.transpile(sqlite_strings(query, names), read="sqlite", write=dialect,
                                unsupported_level=ErrorLevel.RAISE)
    except SqlglotError as error:
        raise ValueError(f"cannot transpile to {dialect}: {str(error).splitlines()[0]}") from None
    if len(out) != 1:
        raise ValueError(f"cannot transpile to {dialect}: {len(out)} statements")
    return out[0]


#: The Python entry-point group of engines from other packages (``name = module:EngineClass``).
ENTRY_POINT_GROUP = "symgen_datasets.sql_engines"


@lru_cache(maxsize=1)
def _engines() -> dict[str, type[Engine]]:
    """The built-in engines, then those other packages register under :data:`ENTRY_POINT_GROUP`."""
    from importlib.metadata import entry_points

    from .duckdb import DuckDBEngine
    from .postgresql import PostgreSQLEngine
    from .sqlite import SQLiteEngine

    engines = {engine.family: engine for engine in (SQLiteEngine, PostgreSQLEngine, DuckDBEngine)}
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        engine = entry.load()
        engines.setdefault(engine.family, engine)
    return engines


def engine_class(family: str) -> type[Engine]:
    """The engine class of ``family`` (``sqlite``, ``postgresql``, ``duckdb``).

    Raises:
        KeyError: no such engine.
    """
    return _engines()[family]


def open_engine(url: str) -> Engine:
    """The engine for ``url``, chosen by its scheme (``postgresql://``, ``postgres://``,
    ``duckdb://``, ``sqlite://``; a driver suffix such as ``postgresql+psycopg://`` is allowed).

    Raises:
        InputError: an unknown scheme, naming the ones there are.
    """
    scheme = url.partition("://")[0].lower().partition("+")[0] if "://" in url else ""
    engines = _engines().values()
    for engine in engines:
        if scheme in engine.schemes:
            return engine(url)
    known = ", ".join(f"{s}://" for e in engines for s in e.schemes)
    raise InputError(f"--db-url {redact_url(url) if '://' in url else url!r}: unknown database URL; "
                     f"expected one of {known} (e.g. postgresql://USER@HOST:5432/{{db_id}})")


def db_ids_option(value: str | None) -> list[str] | None:
    """``--db-ids a,b,c`` as a list (``None`` when not given).

    Raises:
        InputError: an empty name in the list.
    """
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        return list(value)
    names = [name.strip() for name in value.split(",")]
    if not all(names):
        raise InputError(f"--db-ids {value!r}: expected database names separated by commas, e.g. --db-ids sales,hr")
    return names
