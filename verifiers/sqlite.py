"""Execute generated SQL on real SQLite databases: read-only, time-limited, in worker processes.

Generated programs are hostile until proven otherwise. Each query runs

* in a worker process of a :class:`~symgen_datasets.verifiers.pool.WorkerPool`, so a query that
  crashes or hangs its process is killed and the run goes on (the worker is replaced);
* on a connection that cannot change anything (see :func:`connect_readonly`: read-only and
  immutable URI, ``PRAGMA query_only``, an authorizer that allows only reads, no ATTACH);
* in a worker whose memory growth and SQLite heap are capped;
* under a per-query time limit enforced inside the worker by SQLite's progress handler (the
  query is interrupted, the worker survives), with the pool's task timeout as a backstop.

Results are reduced in the worker to what the agreement vote needs (see :func:`result_keys`), so
large results never cross process boundaries.
"""

from __future__ import annotations

import hashlib
import re
import sqlite3
from itertools import chain
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence
from urllib.parse import quote

from .base import ExecutionResult, Verifier
from .engines import QueryError, QueryTimeout, engine_class
from .engines.sqlite import SQLiteEngine
from .pool import WORKER_MEMORY_BYTES, Chunk, WorkerPool

#: Float values are rounded to this many decimals before results are compared, so that the same
#: aggregate computed in a different order (e.g. ``avg``) agrees.
FLOAT_DECIMALS = 6


#: Longest string or blob a query may build (bytes): ``randomblob(1e9)`` fails instead of allocating.
MAX_VALUE_BYTES = 10_000_000
#: PRAGMAs a connection may run: the schema readers (all read-only).
READ_ONLY_PRAGMAS = frozenset({"table_info", "table_xinfo", "index_list", "index_info", "index_xinfo", "foreign_key_list"})
#: Actions the authorizer allows; everything else (writes, schema changes, ATTACH/DETACH,
#: transactions, other PRAGMAs, ANALYZE, virtual tables) is denied.
_ALLOWED_ACTIONS = {sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION, sqlite3.SQLITE_RECURSIVE}
_DENIED_FUNCTIONS = frozenset({"load_extension", "readfile", "writefile", "edit", "fts3_tokenizer"})


def _authorizer(action: int, arg1: str | None, arg2: str | None, database: str | None, trigger: str | None) -> int:
    if action == sqlite3.SQLITE_PRAGMA:
        return sqlite3.SQLITE_OK if (arg1 or "").lower() in READ_ONLY_PRAGMAS else sqlite3.SQLITE_DENY
    if action == sqlite3.SQLITE_FUNCTION:
        return sqlite3.SQLITE_DENY if (arg2 or "").lower() in _DENIED_FUNCTIONS else sqlite3.SQLITE_OK
    return sqlite3.SQLITE_OK if action in _ALLOWED_ACTIONS else sqlite3.SQLITE_DENY


def connect_readonly(db_path: str | Path) -> sqlite3.Connection:
    """Open a SQLite database so that no statement can change it or anything else.

    Layers, each enough on its own to stop a write:

    * the URI ``mode=ro&immutable=1``: SQLite opens the file read-only and never writes or locks it;
    * ``PRAGMA query_only``: SQLite refuses any statement that writes;
    * an authorizer that allows only reads (SELECT, table reads, functions but
      ``load_extension`` and file I/O functions, recursive CTEs, schema-reading PRAGMAs) and
      denies writes, schema changes, ``ATTACH`` / ``DETACH`` (no new file can appear),
      transactions and state-changing PRAGMAs;
    * a cap of :data:`MAX_VALUE_BYTES` on any string or blob a query builds.

    Raises:
        sqlite3.OperationalError: the file does not exist or is not a database.
    """
    path = Path(db_path).resolve()
    if not path.is_file():
        raise sqlite3.OperationalError(f"unable to open database file {path}")
    uri = f"file:{quote(str(path))}?mode=ro&immutable=1"
    connection = sqlite3.connect(uri, uri=True, check_same_thread=False)
    connection.execute("PRAGMA query_only = ON")
    connection.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, MAX_VALUE_BYTES)
    connection.setlimit(sqlite3.SQLITE_LIMIT_ATTACHED, 0)
    connection.set_authorizer(_authorizer)
    connection.text_factory = decode_text
    return connection


def decode_text(raw: bytes) -> str:
    """SQLite TEXT as ``str``, invalid UTF-8 replaced by U+FFFD (Spider's databases hold some
    text that is not valid UTF-8)."""
    return raw.decode("utf-8", errors="replace")


def fetch_rows(connection: sqlite3.Connection, query: str, max_rows: int) -> list[tuple]:
    """Execute ``query`` and fetch at most ``max_rows + 1`` rows, TEXT decoded by
    :func:`decode_text`.

    Rows are first fetched with the C decoder (``str``), several times cheaper than a Python
    text factory; only a result that holds invalid UTF-8 is fetched again with
    :func:`decode_text`. The connection's text factory is restored afterwards.

    Raises:
        sqlite3.Error, ValueError, OverflowError, MemoryError: as ``Connection.execute``.
    """
    factory = connection.text_factory
    connection.text_factory = str
    try:
        try:
            return _fetch(connection, query, max_rows)
        except sqlite3.OperationalError as error:
            if not str(error).startswith("Could not decode to UTF-8"):
                raise
        connection.text_factory = decode_text
        return _fetch(connection, query, max_rows)
    finally:
        connection.text_factory = factory


def _fetch(connection: sqlite3.Connection, query: str, max_rows: int) -> list[tuple]:
    cursor = connection.execute(query)
    try:
        return cursor.fetchmany(max_rows + 1)
    finally:
        cursor.close()


_ORDER_BY = re.compile(r"\border\s+by\b", re.I)
_TOKENS = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|`[^`]*`|\[[^\]]*\]|--[^\n]*|/\*.*?\*/|[()]|" + _ORDER_BY.pattern, re.I | re.S)


def is_ordered(query: str) -> bool:
    """Whether a SQL query's outermost statement has an ``ORDER BY`` (its row order is meant):
    an ``ORDER BY`` outside parentheses, string literals, quoted names and comments. A linear
    scan (parsing every candidate with a full SQL parser costs more than executing it)."""
    if not _ORDER_BY.search(query):  # most queries: no ORDER BY anywhere, no scan
        return False
    depth = 0
    for match in _TOKENS.finditer(query):
        token = match.group(0)
        if token == "(":
            depth += 1
        elif token == ")":
            depth = max(0, depth - 1)
        elif depth == 0 and token[0] not in "'\"`[-/":
            return True
    return False


def _normalise_value(value: object) -> object:
    if isinstance(value, float):
        if value.is_integer():
            return int(value)
        return round(value, FLOAT_DECIMALS)
    return value


#: Most column orders tried to canonicalise a result whose columns hold the same values (ties).
MAX_COLUMN_ORDERS = 120

#: The ways a verifier's result keys are computed, as recorded in a dataset card
#: (``verifier.result_key``): ``columns-unordered`` (the default since 0.2: results equal up to a
#: permutation of columns agree, as the Spider evaluator and SymGen's ``result_eq`` decide) and
#: ``columns-ordered`` (cards without the entry: columns compared in order).
RESULT_KEY_MODES = ("columns-unordered", "columns-ordered")


def _canonical_columns(rows: list[tuple], sequence: bool) -> list[tuple]:
    """``rows`` with their columns in a canonical order: equal for two results that are equal up
    to a permutation of columns (as bags of rows, or as sequences when ``sequence``).

    Columns are sorted by their values (the sequence, or the sorted bag); columns with the same
    values (ties) can pair differently across rows, so for a bag every order of the tied columns
    is tried and the smallest rows win (at most :data:`MAX_COLUMN_ORDERS` orders; beyond that the
    first is kept, which can only split votes, never merge different results).
    """
    from itertools import permutations, product

    width = len(rows[0])
    columns = list(zip(*rows))
    signatures = [repr(column) if sequence else repr(sorted(map(repr, column))) for column in columns]
    order = sorted(range(width), key=signatures.__getitem__)
    groups: list[list[int]] = []
    for j in order:
        if groups and signatures[groups[-1][0]] == signatures[j]:
            groups[-1].append(j)
        else:
            groups.append([j])
    tied = [group for group in groups if len(group) > 1]
    if sequence or not tied:  # tied sequences are equal columns: any order gives the same rows
        return [tuple(row[j] for j in order) for row in rows]
    count = 1
    for group in tied:
        for k in range(2, len(group) + 1):
            count *= k
    if count > MAX_COLUMN_ORDERS:
        return [tuple(row[j] for j in order) for row in rows]
    best = None
    for choice in product(*(permutations(group) if len(group) > 1 else [tuple(group)] for group in groups)):
        arrangement = [j for group in choice for j in group]
        texts = sorted(repr(tuple(row[j] for j in arrangement)) for row in rows)
        if best is None or texts < best[0]:
            best = (texts, arrangement)
    return [tuple(row[j] for j in best[1]) for row in rows]


def result_keys(rows: Sequence[Sequence[object]], ordered: bool, columns_ordered: bool = False) -> str:
    """The equality key of an execution result (the verifier's equality rule).

    Two executions agree when they return the same **multiset** of rows, up to a permutation of
    the columns (``SELECT a, b`` and ``SELECT b, a`` agree, as in Spider's execution accuracy and
    SymGen's ``result_eq``; ``columns_ordered=True`` compares columns in order, the rule of
    datasets made before 0.2), floats rounded to :data:`FLOAT_DECIMALS` decimals, ``1 == 1.0``.
    When the query has a top-level ``ORDER BY`` and returns more than one row, the **sequence**
    of rows must match as well; such a result never agrees with an unordered one. This follows
    Spider's execution accuracy (bag semantics unless the gold query orders), made transitive
    so that results can be clustered by key: the columns are put in a canonical order
    (:func:`_canonical_columns`) before the key is taken.

    The key is the SHA-256 of ``kind`` (``"seq"`` or ``"bag"``) followed, for each row in order
    (sorted by text for a bag), by a NUL and the ``repr`` of the row's normalised tuple (columns in
    canonical order), in UTF-8. This format is stable: the ``candidate_result`` column of
    published datasets uses it. The empty result's key is :data:`EMPTY_RESULT_KEY`.

    Returns:
        A hex digest; equal digests mean equal results.
    """
    values = chain.from_iterable(rows)
    if float in set(map(type, values)):  # normalising only results with floats (C-speed test)
        rows = [tuple(map(_normalise_value, row)) for row in rows]
    sequence = ordered and len(rows) > 1
    if not columns_ordered and rows and len(rows[0]) > 1:
        rows = _canonical_columns([tuple(row) for row in rows], sequence)
    texts = list(map(repr, map(tuple, rows)))
    if sequence:
        kind = "seq"
    else:
        kind = "bag"
        texts.sort()
    body = kind + "\x00" + "\x00".join(texts) if texts else kind
    return hashlib.sha256(body.encode("utf-8", errors="replace")).hexdigest()


#: The key of a result with no rows.
EMPTY_RESULT_KEY = hashlib.sha256(b"bag").hexdigest()


# --- worker side -------------------------------------------------------------------------------

_CONNECTIONS: dict[Any, Any] = {}
#: Connections a worker keeps open to engines other than SQLite (one per database), oldest closed
#: first: a run over many server databases stays within the server's connection limit.
MAX_ENGINE_CONNECTIONS = 8

#: SQLite's heap in a worker (bytes): past it, a query fails with "out of memory", the worker lives.
WORKER_SQLITE_HEAP_BYTES = 512 * 1024**2


def _limit_sqlite_heap(heap_bytes: int) -> None:
    """Worker start: cap SQLite's heap."""
    sqlite3.connect(":memory:").execute(f"PRAGMA hard_heap_limit = {int(heap_bytes)}")


def _worker_connection(context: Any) -> Any:
    """The worker's cached connection for a job's context: a SQLite file (its path) or an
    :class:`~symgen_datasets.verifiers.engines.Target` of another engine."""
    connection = _CONNECTIONS.get(context)
    if connection is None:
        if isinstance(context, (str, Path)):
            connection = connect_readonly(context)
        else:
            servers = [c for c in _CONNECTIONS if not isinstance(c, (str, Path))]
            if len(servers) >= MAX_ENGINE_CONNECTIONS:  # a server has a connection limit: close the oldest
                _CONNECTIONS.pop(servers[0]).close()
            connection = engine_class(context.family).connect(context)
        _CONNECTIONS[context] = connection
    return connection


def execute_one(connection: Any, query: str, timeout_s: float, max_rows: int, columns_ordered: bool = False,
                engine: type | None = None) -> ExecutionResult:
    """Execute one query on an open connection under a time limit (in the calling process).

    Args:
        connection: from :func:`connect_readonly`, or from ``engine.connect``.
        query: one SQL statement (several statements are an error).
        timeout_s: wall-clock limit in seconds (SQLite: enforced by its progress handler).
        max_rows: rows fetched at most; a larger result keeps the first ``max_rows + 1`` rows
            (its key then covers those rows only).
        columns_ordered: see :func:`result_keys`.
        engine: the :class:`~symgen_datasets.verifiers.engines.Engine` class whose ``fetch``
            runs it (default: SQLite's); its normalised rows are keyed by :func:`result_keys`.

    Returns:
        The :class:`ExecutionResult`; never raises for a bad query.
    """
    try:
        rows = (engine or SQLiteEngine).fetch(connection, query, timeout_s, max_rows)
    except QueryTimeout as error:
        return ExecutionResult("timeout", error=str(error))
    except QueryError as error:
        return ExecutionResult("error", error=str(error))
    return ExecutionResult("ok", key=result_keys(rows, len(rows) > 1 and is_ordered(query), columns_ordered),
                           num_rows=len(rows))


def _execute_chunk(groups: Chunk, options: tuple[float, int, bool]) -> list[ExecutionResult]:
    """The SQL chunk function: ``groups`` of ``(context, queries)``, a context being a SQLite
    file (a path or its string) or an engine's ``Target``; ``options`` = ``(timeout_s, max_rows,
    columns_ordered)``."""
    timeout_s, max_rows, columns_ordered = options
    results = []
    for context, queries in groups:
        try:
            connection = _worker_connection(context)
        except (sqlite3.Error, QueryError) as error:
            results.extend(ExecutionResult("error", error=f"cannot open {context}: {error}") for _ in queries)
            continue
        engine = SQLiteEngine if isinstance(context, (str, Path)) else engine_class(context.family)
        results.extend(execute_one(connection, query, timeout_s, max_rows, columns_ordered, engine) for query in queries)
    return results


# --- pool side ---------------------------------------------------------------------------------


class SQLiteExecutor(WorkerPool):
    """Runs batches of SQL queries on SQLite databases in a pool of worker processes (see
    :class:`~symgen_datasets.verifiers.pool.WorkerPool`): many queries per pool task, of one
    database or several (connections are cached per worker), results reduced to small keys in
    the workers, each worker's memory and SQLite heap capped.

    Args:
        max_workers: worker processes (default: the number of CPU cores).
        timeout_s: per-query time limit in seconds (default 5, as in SymGen).
        max_rows: rows fetched per query at most (default 10,000).
        memory_bytes: memory each worker may add to its forked address space.
        columns_ordered: compare result columns in order (see :func:`result_keys`).

    Jobs are ``(db_path, queries)`` pairs. The databases must not change while they are read
    (connections are ``immutable``): give it snapshots (see
    :class:`~symgen_datasets.tasks.databases.DatabaseDirectory`).
    """

    def __init__(
        self,
        max_workers: int | None = None,
        timeout_s: float = 5.0,
        max_rows: int = 10_000,
        memory_bytes: int = WORKER_MEMORY_BYTES,
        columns_ordered: bool = False,
    ):
        super().__init__(_execute_chunk, (timeout_s, max_rows, columns_ordered), max_workers, timeout_s, memory_bytes,
                         setup=_limit_sqlite_heap, setup_args=(WORKER_SQLITE_HEAP_BYTES,))
        self.max_rows = max_rows



_SPACE = re.compile(r"\s+")
_LITERAL = re.compile(r"('(?:[^']|'')*'|\"(?:[^\"]|\"\")*\")")


def normalize_sql(query: str) -> str:
    """Normalise a SQL program for deduplication.

    Strips surrounding white space and trailing semicolons and folds runs of white space outside
    string literals into one space; literals are kept as written, so two programs with the same
    normal form always execute identically.
    """
    text = " ".join(query.split())  # right unless a literal holds white space that this changed
    if ("'" in query or '"' in query) and text != query.strip() and any(
        " ".join(literal.split()) != literal for literal in _LITERAL.findall(query)
    ):
        parts = _LITERAL.split(query.strip())
        folded = [part if index % 2 else _SPACE.sub(" ", part) for index, part in enumerate(parts)]
        text = "".join(folded).strip()
    while text.endswith(";"):
        text = text[:-1].rstrip()
    return text


#: How empty results vote (``--empty-results``): ``reject`` (empty results agree with each other,
#: but a question whose largest cluster is the empty result is not kept), ``abstain`` (an empty
#: result is no vote, as in SymGen's Prolog verifier: the largest non-empty cluster wins) or
#: ``agree`` (the empty result is a result like any other).
EMPTY_RESULT_POLICIES = ("reject", "abstain", "agree")

#: The default policy (see the README's "How verification works" for the measurements behind it).
DEFAULT_EMPTY_RESULTS = "reject"


class SQLiteVerifier(Verifier):
    """The text-to-SQL verifier: every distinct candidate executed once on the question's
    database (a snapshot), read-only and time-limited, in worker processes; candidates agree when
    their execution results are equal up to a permutation of columns (:func:`result_keys`).

    Args:
        databases: gives each ``db_id`` its database file, ``databases.path(db_id)`` (a
            :class:`~symgen_datasets.tasks.databases.DatabaseDirectory`).
        timeout_s: per-query time limit in seconds.
        max_workers: worker processes (default: CPU cores).
        executor: an :class:`SQLiteExecutor` to use (not closed by :meth:`close`); default: one
            of its own, started on first use.
        empty_results: one of :data:`EMPTY_RESULT_POLICIES` (default :data:`DEFAULT_EMPTY_RESULTS`):
            ``reject`` (a question the empty result wins is not kept), ``abstain`` (a candidate
            whose result has no rows executes but votes for nothing) or ``agree`` (empty results
            form a cluster like any result).
    """

    name = "sqlite"
    outcome_word = "executable"

    def __init__(self, databases: Any, timeout_s: float = 5.0, max_workers: int | None = None,
                 executor: SQLiteExecutor | None = None, empty_results: str | None = None):
        self.databases = databases
        self.timeout_s = timeout_s
        self.max_workers = max_workers
        self._executor = executor
        self._owns_executor = executor is None
        self._paths: dict[str, Any] = {}
        self.empty_results = empty_results or DEFAULT_EMPTY_RESULTS
        engine = getattr(databases, "engine", None)
        #: the engine's family (``sqlite``, ``postgresql``, ``duckdb``): the verifier's name in cards
        self.name = engine.family if engine is not None else "sqlite"
        self._engine = engine
        self.result_key = "columns-unordered"
        self._check_rule()

    def _check_rule(self) -> None:
        if self.empty_results not in EMPTY_RESULT_POLICIES:
            raise ValueError(f"empty_results {self.empty_results!r}: expected one of {', '.join(EMPTY_RESULT_POLICIES)}")
        if self.result_key not in RESULT_KEY_MODES:
            raise ValueError(f"result_key {self.result_key!r}: expected one of {', '.join(RESULT_KEY_MODES)}")

    @property
    def barred_labels(self) -> frozenset[str]:
        """With ``empty_results="reject"``, the empty result: it is voted for, but never wins."""
        return frozenset({EMPTY_RESULT_KEY}) if self.empty_results == "reject" else frozenset()

    @property
    def executor(self) -> SQLiteExecutor:
        if self._executor is None:
            self._executor = SQLiteExecutor(max_workers=self.max_workers, timeout_s=self.timeout_s,
                                            columns_ordered=self.result_key == "columns-ordered")
        return self._executor

    def cluster_labels(self, outcomes: Sequence[ExecutionResult], index: Sequence[int]) -> list[str | None] | None:
        """Equal result keys agree; with ``empty_results="abstain"`` an empty result is no label
        (it executed, and votes for nothing)."""
        if self.empty_results != "abstain":
            return None
        return [o.key if o.ok and o.key != EMPTY_RESULT_KEY else None for o in outcomes]

    def provenance(self) -> dict[str, str]:
        """For the card: the agreement rule (``result_key``, ``empty_results``) and, on an engine
        other than SQLite, the engine and its version, the dialect, and the safety layers."""
        recorded = {"result_key": self.result_key, "empty_results": self.empty_results}
        if self._engine is not None and self._engine.family != "sqlite":
            recorded.update(engine=self._engine.version(), dialect=self._engine.dialect,
                            safety="; ".join(self._engine.safety))
        return recorded

    def configure(self, recorded: dict[str, Any]) -> None:
        """Adopt the agreement rule a card records (``symgen verify`` of a dataset made by an
        older version): cards without ``result_key`` compared columns in order and let empty
        results agree."""
        self.result_key = recorded.get("result_key", "columns-ordered")
        self.empty_results = recorded.get("empty_results", "agree")
        self._check_rule()

    normalize = staticmethod(normalize_sql)

    def context(self, row: dict) -> Any:
        """The worker's context of ``row``'s database: a SQLite snapshot's path, or an engine's
        :class:`~symgen_datasets.verifiers.engines.Target`."""
        db_id = row["db_id"]
        target = self._paths.get(db_id)
        if target is None:
            target = self._paths[db_id] = self.databases.target(db_id, self.timeout_s)
        return target

    def execute_stream(self, jobs: Iterable[tuple[Any, Sequence[str]]]) -> Iterator[list[ExecutionResult]]:
        return self.executor.execute_stream(jobs)

    def describe(self) -> str:
        columns = "in any column order" if self.result_key == "columns-unordered" else "columns in order"
        empty = {"abstain": "a result with no rows votes for nothing",
                 "reject": "a question whose largest cluster returns no rows is not kept",
                 "agree": "empty results agree with each other"}[self.empty_results]
        engine = self._engine.pretty_name if self._engine is not None else "SQLite"
        return (f"every candidate executed on the question's {engine} database (read-only, {self.timeout_s:g} s per "
                f"query, in worker processes); candidates agree when their results hold the same multiset of rows, "
                f"{columns} (row order too when the query has a top-level ORDER BY and returns more than one row; "
                f"floats rounded to 6 decimals); {empty}")

    def close(self) -> None:
        if self._executor is not None and self._owns_executor:
            self._executor.close()
            self._executor = None
