"""Execute generated SQL on real SQLite databases: read-only, time-limited, in worker processes.

Generated programs are hostile until proven otherwise. Each query runs

* in a worker process of a :class:`pebble.ProcessPool`, so a query that crashes or hangs its
  process is killed and the run goes on (the worker is replaced);
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
import multiprocessing
import os
import re
import sqlite3
import time
from collections import deque
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import Iterable, Iterator, Sequence
from urllib.parse import quote

import pebble

#: Float values are rounded to this many decimals before results are compared, so that the same
#: aggregate computed in a different order (e.g. ``avg``) agrees.
FLOAT_DECIMALS = 6


@dataclass(frozen=True)
class ExecutionResult:
    """The outcome of executing one SQL program.

    Attributes:
        status: ``"ok"``, ``"error"`` (SQLite rejected it), ``"timeout"`` (over the time
            limit) or ``"crash"`` (the worker process died or hung).
        key: the result's equality key (see :func:`result_keys`); ``None`` unless ``ok``.
        num_rows: number of rows returned (capped at ``max_rows + 1``); 0 unless ``ok``.
        error: SQLite's message (or the failure) when not ``ok``.
    """

    status: str
    key: str | None = None
    num_rows: int = 0
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"


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


def result_keys(rows: Sequence[Sequence[object]], ordered: bool) -> str:
    """The equality key of an execution result (the verifier's equality rule).

    Two executions agree when they return the same **multiset** of rows (columns compared in
    order, floats rounded to :data:`FLOAT_DECIMALS` decimals, ``1 == 1.0``). When the query has a
    top-level ``ORDER BY`` and returns more than one row, the **sequence** of rows must match as
    well; such a result never agrees with an unordered one. This follows Spider's execution
    accuracy (bag semantics unless the gold query orders), made transitive so that results can be
    clustered by key.

    The key is the SHA-256 of ``kind`` (``"seq"`` or ``"bag"``) followed, for each row in order
    (sorted by text for a bag), by a NUL and the ``repr`` of the row's normalised tuple, in UTF-8.
    This format is stable: the ``candidate_result`` column of published datasets uses it.

    Returns:
        A hex digest; equal digests mean equal results.
    """
    values = chain.from_iterable(rows)
    if float in set(map(type, values)):  # normalising only results with floats (C-speed test)
        rows = [tuple(map(_normalise_value, row)) for row in rows]
    texts = list(map(repr, map(tuple, rows)))
    if ordered and len(texts) > 1:
        kind = "seq"
    else:
        kind = "bag"
        texts.sort()
    body = kind + "\x00" + "\x00".join(texts) if texts else kind
    return hashlib.sha256(body.encode("utf-8", errors="replace")).hexdigest()


# --- worker side -------------------------------------------------------------------------------

_CONNECTIONS: dict[str, sqlite3.Connection] = {}

#: Memory a worker process may add to what it inherited (bytes): a query that needs more fails
#: or kills only its worker.
WORKER_MEMORY_BYTES = 2 * 1024**3
#: SQLite's heap in a worker (bytes): past it, a query fails with "out of memory", the worker lives.
WORKER_SQLITE_HEAP_BYTES = 512 * 1024**2


def _address_space() -> int:
    """This process's virtual memory size in bytes (``/proc/self/statm``), 0 if unknown."""
    try:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def _init_worker(memory_bytes: int, sqlite_heap_bytes: int) -> None:
    """Worker start: let the address space grow by at most ``memory_bytes`` beyond what the fork
    inherited (shared, copy-on-write pages of the parent, e.g. a loaded LLM, are not new memory)
    and cap SQLite's heap."""
    import resource

    limit = _address_space() + memory_bytes
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    sqlite3.connect(":memory:").execute(f"PRAGMA hard_heap_limit = {int(sqlite_heap_bytes)}")


def _worker_connection(db_path: str) -> sqlite3.Connection:
    connection = _CONNECTIONS.get(db_path)
    if connection is None:
        connection = _CONNECTIONS[db_path] = connect_readonly(db_path)
    return connection


def execute_one(
    connection: sqlite3.Connection, query: str, timeout_s: float, max_rows: int
) -> ExecutionResult:
    """Execute one query on an open connection under a time limit (in the calling process).

    Args:
        connection: from :func:`connect_readonly`.
        query: one SQL statement (several statements are an error).
        timeout_s: wall-clock limit in seconds, enforced by SQLite's progress handler.
        max_rows: rows fetched at most; a larger result keeps the first ``max_rows + 1`` rows
            (its key then covers those rows only).

    Returns:
        The :class:`ExecutionResult`; never raises for a bad query.
    """
    deadline = time.monotonic() + timeout_s
    connection.set_progress_handler(lambda: int(time.monotonic() > deadline), 1000)
    try:
        rows = fetch_rows(connection, query, max_rows)
    except sqlite3.OperationalError as error:
        if "interrupted" in str(error):
            return ExecutionResult("timeout", error=f"over the {timeout_s:g} s time limit")
        return ExecutionResult("error", error=str(error))
    except (sqlite3.Error, ValueError, OverflowError, MemoryError) as error:
        return ExecutionResult("error", error=f"{type(error).__name__}: {error}")
    finally:
        connection.set_progress_handler(None, 0)
    return ExecutionResult("ok", key=result_keys(rows, len(rows) > 1 and is_ordered(query)), num_rows=len(rows))


#: A pool task's work: ``(db_path, queries)`` groups, run in order.
Chunk = list[tuple[str, list[str]]]


def _execute_chunk(groups: Chunk, timeout_s: float, max_rows: int) -> list[ExecutionResult]:
    results = []
    for db_path, queries in groups:
        try:
            connection = _worker_connection(db_path)
        except sqlite3.Error as error:
            results.extend(ExecutionResult("error", error=f"cannot open {db_path}: {error}") for _ in queries)
            continue
        results.extend(execute_one(connection, query, timeout_s, max_rows) for query in queries)
    return results


# --- pool side ---------------------------------------------------------------------------------


class SQLiteExecutor:
    """Runs batches of SQL programs on SQLite databases in a pool of worker processes.

    Pool tasks carry many programs, of one database or several (connections are cached per
    worker), which avoids SymGen's one-task-per-candidate overhead; results come back as small
    keys. A task whose worker dies or overruns its backstop timeout is retried one query per
    task, so only the offending query is marked ``crash``.

    Args:
        max_workers: worker processes (default: the number of CPU cores).
        timeout_s: per-query time limit in seconds (default 5, as in SymGen).
        max_rows: rows fetched per query at most (default 10,000).
        memory_bytes: memory each worker may add to its forked address space (default
            :data:`WORKER_MEMORY_BYTES`).

    Attributes:
        chunk_queries: queries per pool task at most (tasks start at 1 query and double up to
            it, so that small workloads still spread over the workers).
        tasks_per_worker: pool tasks kept scheduled per worker while a stream is consumed.

    Use as a context manager, or call :meth:`close`.
    """

    def __init__(
        self,
        max_workers: int | None = None,
        timeout_s: float = 5.0,
        max_rows: int = 10_000,
        memory_bytes: int = WORKER_MEMORY_BYTES,
    ):
        self.max_workers = max_workers or os.cpu_count() or 1
        self.timeout_s = timeout_s
        self.max_rows = max_rows
        self.memory_bytes = memory_bytes
        self.chunk_queries = 128
        self.tasks_per_worker = 8
        self._pool = self._new_pool()

    def _new_pool(self) -> pebble.ProcessPool:
        # "fork" (Linux's default): "spawn" and "forkserver" re-import the caller's __main__ in
        # every worker, which breaks scripts without an `if __name__ == "__main__"` guard and
        # code read from stdin. The memory cap is relative to the forked address space.
        return pebble.ProcessPool(
            max_workers=self.max_workers,
            initializer=_init_worker,
            initargs=(self.memory_bytes, WORKER_SQLITE_HEAP_BYTES),
            context=multiprocessing.get_context("fork"),
        )

    def _backstop(self, num_queries: int) -> float:
        return num_queries * self.timeout_s * 1.5 + 10.0

    def _schedule(self, groups: Chunk):
        size = sum(len(queries) for _, queries in groups)
        arguments = dict(args=(groups, self.timeout_s, self.max_rows), timeout=self._backstop(size))
        try:
            return self._pool.schedule(_execute_chunk, **arguments)
        except RuntimeError:
            # pebble's pool is broken for good when a worker dies outside a task (e.g. killed
            # while idle by the OOM killer): replace the pool and go on.
            self._pool.stop()
            self._pool = self._new_pool()
            return self._pool.schedule(_execute_chunk, **arguments)

    def execute_stream(
        self, jobs: Iterable[tuple[str | Path, Sequence[str]]]
    ) -> Iterator[list[ExecutionResult]]:
        """Execute batches of queries as a stream: jobs are read lazily and results come back in
        job order, while the workers run ahead (the caller can prepare the next jobs, or vote on
        the last results, as the queries execute).

        Queries of consecutive jobs are packed into pool tasks of up to :attr:`chunk_queries`
        queries (databases may mix), and at most :attr:`tasks_per_worker` tasks per worker are
        scheduled at a time, so memory holds a window of jobs, whatever their number.

        Args:
            jobs: ``(db_path, queries)`` pairs; each batch runs on one database.

        Yields:
            One list of :class:`ExecutionResult` per job, aligned with its queries.
        """
        waiting: deque[list] = deque()  # per job, oldest first: [results, queries still running]
        in_flight: deque[tuple] = deque()  # per task, oldest first: (future, groups, places)
        limit = self.tasks_per_worker * self.max_workers
        size, groups, places = 1, [], []

        def finish_oldest_task() -> None:
            future, task_groups, task_places = in_flight.popleft()
            try:
                outcomes = future.result()
            except Exception:  # noqa: BLE001 - a dead, hung or failing worker: find the culprit
                outcomes = self._isolate(task_groups)
            for (entry, position), outcome in zip(task_places, outcomes):
                entry[0][position] = outcome
                entry[1] -= 1

        def finished_jobs() -> Iterator[list[ExecutionResult]]:
            while waiting and waiting[0][1] == 0:
                yield waiting.popleft()[0]

        def submit_task() -> None:
            nonlocal size, groups, places
            in_flight.append((self._schedule(groups), groups, places))
            size, groups, places = min(2 * size, self.chunk_queries), [], []

        for db_path, queries in jobs:
            db_path, queries = str(db_path), list(queries)
            entry = [[None] * len(queries), len(queries)]
            waiting.append(entry)
            for position, query in enumerate(queries):
                if not groups or groups[-1][0] != db_path:
                    groups.append((db_path, []))
                groups[-1][1].append(query)
                places.append((entry, position))
                if len(places) >= size:
                    submit_task()
            while len(in_flight) >= limit:
                finish_oldest_task()
            yield from finished_jobs()
        if places:
            submit_task()
        while in_flight:
            finish_oldest_task()
            yield from finished_jobs()

    def execute_many(
        self, jobs: Iterable[tuple[str | Path, Sequence[str]]]
    ) -> list[list[ExecutionResult]]:
        """Execute several batches concurrently; :meth:`execute_stream` gathered in a list.

        Args:
            jobs: ``(db_path, queries)`` pairs; each batch runs on one database.

        Returns:
            One list of :class:`ExecutionResult` per job, aligned with its queries.
        """
        return list(self.execute_stream(jobs))

    def _isolate(self, groups: Chunk) -> list[ExecutionResult]:
        """Re-run a failed task one query per task so that only the culprit fails."""
        futures = [self._schedule([(db_path, [query])]) for db_path, queries in groups for query in queries]
        outcomes = []
        for future in futures:
            try:
                outcomes.append(future.result()[0])
            except FutureTimeout:
                outcomes.append(ExecutionResult("crash", error="worker hung past the time limit and was killed"))
            except pebble.ProcessExpired as error:
                outcomes.append(ExecutionResult("crash", error=f"worker died ({error})"))
            except Exception as error:  # noqa: BLE001
                outcomes.append(ExecutionResult("crash", error=f"{type(error).__name__}: {error}"))
        return outcomes

    def execute(self, db_path: str | Path, queries: Sequence[str]) -> list[ExecutionResult]:
        """Execute one batch of queries on one database; see :meth:`execute_many`."""
        return self.execute_many([(db_path, queries)])[0]

    def close(self) -> None:
        """Stop the worker processes."""
        self._pool.stop()
        self._pool.join()

    def __enter__(self) -> "SQLiteExecutor":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
