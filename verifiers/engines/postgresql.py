"""PostgreSQL through psycopg 3: generated SQL runs as hostile code on a server whose URL's role
may well be a superuser.

Layers, any of which stops a write on its own except where noted:

1. the statement guard (:mod:`.guard`): one ``SELECT`` query reading only the database's own
   tables and calling only allow-listed functions (this is what stops ``COPY ... TO PROGRAM``
   and ``pg_read_file`` for a superuser, which a read-only transaction does not);
2. the query runs as ``DECLARE CURSOR`` through the extended protocol (one statement: several
   are a protocol error; only a ``SELECT`` or ``VALUES`` without data-modifying ``WITH`` is
   accepted there);
3. a ``REPEATABLE READ READ ONLY`` transaction (``default_transaction_read_only`` too): no write,
   DDL, role change, ``ALTER SYSTEM`` or ``VACUUM`` (they cannot run in a transaction block);
4. ``statement_timeout`` = the per-query time limit, set when the session starts;
5. when the URL's role is a superuser, the session switches to the predefined role
   ``pg_read_all_data`` (reads every table, has no superuser, file or program privilege).

The run's read view is one snapshot per database, exported by the main process
(``pg_export_snapshot``) and imported by every worker's transaction, so every candidate of the
run sees the same committed state.
"""

from __future__ import annotations

import warnings
from typing import Any, ClassVar, Sequence
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from ...errors import InputError
from . import Column, Engine, QueryError, QueryTimeout, TableInfo, Target, normalise_rows

#: Our own statements (introspection, example rows) stop after this long (milliseconds).
MAIN_STATEMENT_TIMEOUT_MS = 60_000
#: The predefined role a superuser's sessions switch to (PostgreSQL 14 and later).
READ_ROLE = "pg_read_all_data"
#: A worker's open cursors are closed together every this many queries (each holds a portal).
CURSORS_PER_CLOSE = 32
#: Databases never listed as db_ids.
SYSTEM_DATABASES = ("postgres",)


def read_only_role_advice(db_ids: Sequence[str] = ("DB",)) -> str:
    """The statements a user runs once to make a role that can only read (for messages)."""
    grants = " ".join(f"GRANT CONNECT ON DATABASE {d} TO symgen_reader;" for d in db_ids)
    return ("CREATE ROLE symgen_reader LOGIN PASSWORD '...'; " + grants +
            " GRANT pg_read_all_data TO symgen_reader;")


class PostgreSQLEngine(Engine):
    """PostgreSQL (sqlglot dialect ``postgres``); tables of the ``public`` schema.

    The URL is ``postgresql://USER[:PASSWORD]@HOST:PORT/{db_id}`` (one database per db_id) or
    names one database (then it is the only db_id); libpq's query parameters (``sslmode``...)
    are passed on.
    """

    family: ClassVar[str] = "postgresql"
    pretty_name: ClassVar[str] = "PostgreSQL"
    dialect: ClassVar[str] = "postgres"
    schemes: ClassVar[tuple[str, ...]] = ("postgresql", "postgres")
    safety: ClassVar[tuple[str, ...]] = (
        "statement guard: one SELECT query, the database's own tables only, allow-listed functions only",
        "executed as DECLARE CURSOR (no multi-statement, no data-modifying WITH)",
        "REPEATABLE READ READ ONLY transaction on the run's exported snapshot",
        "statement_timeout = the per-query time limit",
        "a superuser URL's sessions switch to pg_read_all_data",
    )

    def __init__(self, url: str):
        super().__init__(url)
        parts = urlsplit(url)
        self._parts = parts._replace(scheme="postgresql")
        self._templated = "{db_id}" in unquote(parts.path)
        self._sessions: dict[str, Any] = {}
        self._snapshots: dict[str, str] = {}
        self._superuser: bool | None = None
        self._tables: dict[str, list[TableInfo]] = {}
        self._version: str | None = None

    # --- connections -------------------------------------------------------------------------

    def conninfo(self, db_id: str) -> str:
        """The libpq URL of ``db_id`` (credentials included: never show it; see :attr:`shown_url`)."""
        path = unquote(self._parts.path)
        path = path.replace("{db_id}", quote(db_id, safe="")) if self._templated else path
        return urlunsplit(self._parts._replace(path=path))

    def _connect_main(self, db_id: str):
        import psycopg

        try:
            connection = psycopg.connect(self.conninfo(db_id), autocommit=False, connect_timeout=10,
                                         options=f"-c statement_timeout={MAIN_STATEMENT_TIMEOUT_MS}")
        except psycopg.Error as error:
            raise InputError(f"--db-url {self.shown_url}: cannot connect to database {db_id!r} "
                             f"({str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__})") from None
        connection.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        connection.read_only = True
        return connection

    def _session(self, db_id: str):
        """The main process's connection to ``db_id``: one REPEATABLE READ READ ONLY transaction
        whose snapshot is exported for the workers (made on first use)."""
        session = self._sessions.get(db_id)
        if session is None:
            session = self._sessions[db_id] = self._connect_main(db_id)
            self._snapshots[db_id] = session.execute("SELECT pg_export_snapshot()").fetchone()[0]
            if self._superuser is None:
                self._superuser = session.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()[0]
                if self._superuser:
                    warnings.warn(
                        f"--db-url {self.shown_url}: the URL's role is a superuser; generated SQL runs as "
                        f"{READ_ROLE} behind a statement guard and a read-only transaction, but a role that can "
                        f"only read is safer: {read_only_role_advice([db_id])}", stacklevel=2)
        return session

    def begin_run(self, db_ids: Sequence[str]) -> None:
        """A fresh exported snapshot per database: the run's read view."""
        self.end_run()
        for db_id in db_ids:
            self._session(db_id)

    def end_run(self) -> None:
        for session in self._sessions.values():
            try:
                session.close()
            except Exception:  # noqa: BLE001 - a connection the server already closed
                pass
        self._sessions.clear()
        self._snapshots.clear()

    # --- introspection -----------------------------------------------------------------------

    def list_databases(self) -> list[str]:
        if not self._templated:
            name = unquote(self._parts.path.lstrip("/"))
            if not name:
                raise InputError(f"--db-url {self.shown_url}: no database in the URL; end it with /DBNAME or /{{db_id}}")
            return [name]
        import psycopg

        try:
            with psycopg.connect(self.conninfo("postgres"), connect_timeout=10, autocommit=True) as connection:
                names = [r[0] for r in connection.execute(
                    "SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate "
                    "AND has_database_privilege(datname, 'CONNECT') ORDER BY datname")]
        except psycopg.Error as error:
            raise InputError(f"--db-url {self.shown_url}: cannot list the databases ({str(error).strip()}); "
                             "name them with --db-ids a,b,c") from None
        return [n for n in names if n not in SYSTEM_DATABASES and not n.startswith("template")]

    def version(self) -> str:
        if self._version is None:
            session = next(iter(self._sessions.values()), None) or self._session(self.list_databases()[0])
            self._version = f"PostgreSQL {session.execute('SHOW server_version').fetchone()[0].split()[0]}"
        return self._version

    def tables(self, db_id: str) -> list[TableInfo]:
        if db_id in self._tables:
            return self._tables[db_id]
        session = self._session(db_id)
        relations = session.execute(
            "SELECT c.oid, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'm') ORDER BY c.oid").fetchall()
        tables = []
        for oid, name in relations:
            columns = session.execute(
                "SELECT attnum, attname, format_type(atttypid, atttypmod) FROM pg_attribute "
                "WHERE attrelid = %s AND attnum > 0 AND NOT attisdropped ORDER BY attnum", (oid,)).fetchall()
            by_number = {number: column for number, column, _ in columns}
            key: tuple[str, ...] = ()
            foreign = []
            for kind, own, other, referenced in session.execute(
                    "SELECT con.contype, con.conkey, con.confkey, f.relname FROM pg_constraint con "
                    "LEFT JOIN pg_class f ON f.oid = con.confrelid WHERE con.conrelid = %s AND con.contype IN ('p', 'f') "
                    "ORDER BY con.oid", (oid,)):
                if kind == "p":
                    key = tuple(by_number[n] for n in own)
                else:
                    names = dict(session.execute(
                        "SELECT attnum, attname FROM pg_attribute WHERE attrelid = %s::regclass",
                        (referenced,)).fetchall())
                    foreign.append((tuple(by_number[n] for n in own), referenced, tuple(names[n] for n in other)))
            tables.append(TableInfo(name, tuple(Column(c, t) for _, c, t in columns), key, tuple(foreign)))
        self._tables[db_id] = tables
        return tables

    def _relation(self, table: str):
        from psycopg import sql

        return sql.Identifier("public", table)

    def count_rows(self, db_id: str, table: str) -> int:
        from psycopg import sql

        query = sql.SQL("SELECT count(*) FROM {}").format(self._relation(table))
        return self._session(db_id).execute(query).fetchone()[0]

    def rows(self, db_id: str, table: str, offset: int, limit: int) -> list[tuple]:
        from psycopg import sql

        query = sql.SQL("SELECT * FROM {} ORDER BY ctid LIMIT %s OFFSET %s").format(self._relation(table))
        return normalise_rows(self._session(db_id).execute(query, (limit, offset)).fetchall())

    def target(self, db_id: str, timeout_s: float) -> Target:
        self._session(db_id)
        names = frozenset(t.name.lower() for t in self.tables(db_id))
        return Target(self.family, self.conninfo(db_id), self._snapshots[db_id], names, timeout_s,
                      READ_ROLE if self._superuser else None)

    # --- workers -----------------------------------------------------------------------------

    @classmethod
    def connect(cls, target: Target) -> "_Session":
        return _Session(target)

    @classmethod
    def fetch(cls, connection: "_Session", query: str, timeout_s: float, max_rows: int) -> list[tuple]:
        return connection.fetch(query, max_rows)


class _Session:
    """A worker's connection: a read-only transaction on the run's snapshot; per query, in one
    round trip of the session's pipeline (psycopg's pipeline mode: the extended protocol, so the query text is
    one statement or an error): ``DECLARE ... CURSOR FOR <query>`` and ``FETCH max_rows + 1``;
    cursors are closed in batches (:data:`CURSORS_PER_CLOSE`). A failed query ends the
    transaction (and its cursors); the next one imports the same snapshot."""

    def __init__(self, target: Target):
        import logging

        import psycopg

        logging.getLogger("psycopg").setLevel(logging.ERROR)  # "pipeline aborted" after a failing candidate
        self.target = target
        timeout_ms = max(1, int(target.timeout_s * 1000))
        try:
            self.connection = psycopg.connect(
                target.location, autocommit=True, connect_timeout=10, prepare_threshold=None,
                options=f"-c statement_timeout={timeout_ms} -c default_transaction_read_only=on "
                        f"-c lock_timeout={timeout_ms} -c idle_in_transaction_session_timeout=0 -c jit=off")
        except psycopg.Error as error:
            raise QueryError(f"cannot connect to {target}: {str(error).strip()}") from None
        if target.role:
            self.connection.execute(f'SET ROLE "{target.role}"')
        self.connection.autocommit = False
        self.connection.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        self.connection.read_only = True
        self._begin()
        self._count = 0
        # one pipeline for the session's life: a query is queued and sent with one sync
        self._pipeline_context = self.connection.pipeline()
        self._pipeline = self._pipeline_context.__enter__()

    def _begin(self) -> None:
        from psycopg import sql

        if self.target.view:
            self.connection.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(self.target.view)))
        else:
            self.connection.execute("SELECT 1")

    def fetch(self, query: str, max_rows: int) -> list[tuple]:
        import psycopg

        from . import guard

        guard.check_query(query, PostgreSQLEngine.dialect, self.target.tables)
        query = query.strip().rstrip(";").strip()
        connection = self.connection
        try:
            self._count += 1
            name = f"symgen_candidate_{self._count}"
            if self._count % CURSORS_PER_CLOSE == 0:  # cursors are closed in batches: one statement less per query
                connection.execute("CLOSE ALL")
            connection.execute(f"DECLARE {name} NO SCROLL CURSOR FOR " + query)  # type: ignore[operator]
            cursor = connection.execute(f"FETCH FORWARD {int(max_rows) + 1} FROM {name}")
            self._pipeline.sync()
            rows = cursor.fetchall()
        except psycopg.errors.QueryCanceled:
            self._recover()
            raise QueryTimeout(f"over the {self.target.timeout_s:g} s time limit") from None
        except psycopg.Error as error:
            self._recover()
            message = (getattr(getattr(error, "diag", None), "message_primary", None) or str(error)).strip()
            raise QueryError(message.splitlines()[0] if message else type(error).__name__) from None
        return normalise_rows(rows)

    def close(self) -> None:
        """End the pipeline, the transaction and the connection."""
        import psycopg

        try:
            self._pipeline_context.__exit__(None, None, None)
        except psycopg.Error:
            pass
        self.connection.close()

    def _recover(self) -> None:
        """After a failed query: leave the aborted pipeline, roll the transaction back and start
        a new one on the same snapshot, in a new pipeline (a connection that broke is opened
        again). Cheaper than a savepoint around every query, most of which succeed."""
        import psycopg

        try:
            self._pipeline_context.__exit__(None, None, None)
        except psycopg.Error:
            pass  # the aborted commands' results: the error was already reported
        try:
            self.connection.rollback()
            self._begin()
        except psycopg.Error:
            self.connection.close()
            self.__init__(self.target)  # a new session (raises QueryError when the server is gone)
            return
        self._pipeline_context = self.connection.pipeline()
        self._pipeline = self._pipeline_context.__enter__()
