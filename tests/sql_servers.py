"""Test infrastructure for SQL engines: a real PostgreSQL server in a temporary folder on
127.0.0.1, and a loader of Spider's SQLite databases into PostgreSQL and DuckDB.

The server runs the machine's own PostgreSQL binaries (``initdb``, ``pg_ctl``). PostgreSQL
refuses to run as root, so under root the server runs as the unprivileged system user
``postgres`` (the Debian package creates it). Importable by benchmarks too.
"""

from __future__ import annotations

import atexit
import glob
import os
import pwd
import shutil
import socket
import sqlite3
import subprocess
import tempfile
from pathlib import Path

#: Spider dev databases the engine benchmarks and tests load: the five the spider task packages.
SPIDER_DATABASES = ("car_1", "concert_singer", "employee_hire_evaluation", "flight_2", "pets_1")
#: The read-only role the fixture creates (what the README tells users to create).
READER = "symgen_reader"


def postgres_bindir() -> Path | None:
    """The folder of ``initdb`` and ``pg_ctl`` (newest version installed), or ``None``."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostgresServer:
    """A PostgreSQL server of its own: ``initdb`` into a temporary folder, ``pg_ctl start`` on
    127.0.0.1 and a free port, trust authentication on loopback only; :meth:`stop` removes it.

    Attributes:
        port: the TCP port.
        superuser: the bootstrap superuser's name (``postgres``).
    """

    def __init__(self):
        bindir = postgres_bindir()
        if bindir is None:
            raise RuntimeError("PostgreSQL's server binaries (initdb, pg_ctl) are not installed")
        self.bindir = bindir
        self.port = _free_port()
        self.superuser = "postgres"
        self.root = Path(tempfile.mkdtemp(prefix="symgen-pg-"))
        self._user = None
        if os.geteuid() == 0:
            self._user = pwd.getpwnam("postgres")
            os.chown(self.root, self._user.pw_uid, self._user.pw_gid)
            self.root.chmod(0o700)
        self.data = self.root / "data"
        self._run([str(bindir / "initdb"), "-D", str(self.data), "-U", self.superuser, "-A", "trust", "-E", "UTF8",
                   "--no-sync", "--locale=C"])
        options = f"-h 127.0.0.1 -p {self.port} -k {self.root} -c fsync=off -c max_connections=100"
        self._run([str(bindir / "pg_ctl"), "-D", str(self.data), "-o", options, "-l", str(self.root / "log"), "-w",
                   "start"])
        self._stopped = False
        atexit.register(self.stop)  # a test session or benchmark that dies still stops its server

    def _run(self, command: list[str]) -> None:
        kwargs = {}
        if self._user is not None:
            uid, gid = self._user.pw_uid, self._user.pw_gid
            kwargs["preexec_fn"] = lambda: (os.setgid(gid), os.setuid(uid))
        subprocess.run(command, check=True, capture_output=True, cwd=self.root, **kwargs)

    def url(self, database: str = "{db_id}", user: str | None = None, password: str | None = None) -> str:
        """``postgresql://USER[:PASSWORD]@127.0.0.1:PORT/DATABASE``."""
        who = user or self.superuser
        if password:
            who += f":{password}"
        return f"postgresql://{who}@127.0.0.1:{self.port}/{database}"

    def execute(self, sql: str, database: str = "postgres") -> list[tuple]:
        """Run ``sql`` as the superuser (autocommit); the rows, if any."""
        import psycopg

        with psycopg.connect(self.url(database), autocommit=True) as connection:
            cursor = connection.execute(sql)
            return cursor.fetchall() if cursor.description else []

    def create_reader(self) -> str:
        """Create :data:`READER`, a login role that can only read (``pg_read_all_data``); its URL pattern."""
        self.execute(f"CREATE ROLE {READER} LOGIN; GRANT pg_read_all_data TO {READER}")
        return self.url(user=READER)

    def stop(self) -> None:
        """Stop the server and remove its folder (once; later calls do nothing)."""
        if self._stopped:
            return
        self._stopped = True
        try:
            self._run([str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop"])
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> "PostgresServer":
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()


# --- loading Spider's SQLite databases -----------------------------------------------------------


def _column_type(values: list) -> str:
    present = [v for v in values if v is not None]
    if present and all(isinstance(v, int) and not isinstance(v, bool) for v in present):
        return "BIGINT"
    if present and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in present):
        return "DOUBLE PRECISION"
    return "TEXT"


def _convert(value, kind: str):
    if value is None:
        return None
    if kind == "TEXT":
        if isinstance(value, bytes):
            return value.decode("utf-8", errors="replace")
        return str(value)
    return value


def _name(name: str) -> str:
    lowered = name.lower()
    return lowered if lowered.isidentifier() else '"' + lowered.replace('"', '""') + '"'


def read_sqlite(path: Path) -> list[dict]:
    """Every table of a SQLite file: ``name``, ``columns`` [(name, type)], ``rows``, ``primary_key``,
    ``foreign_keys`` [(columns, table, columns)]; types from the values (BIGINT, DOUBLE
    PRECISION, TEXT), names lower case."""
    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    connection.text_factory = lambda raw: raw.decode("utf-8", errors="replace")
    tables = []
    for (name,) in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY rowid"):
        info = connection.execute(f'PRAGMA table_info("{name}")').fetchall()
        rows = connection.execute(f'SELECT * FROM "{name}"').fetchall()
        kinds = [_column_type([row[i] for row in rows]) for i in range(len(info))]
        keys = [r[1].lower() for r in sorted((r for r in info if r[5]), key=lambda r: r[5])]
        foreign: dict[int, list] = {}
        for fk in connection.execute(f'PRAGMA foreign_key_list("{name}")'):
            foreign.setdefault(fk[0], [fk[2].lower(), [], []])
            foreign[fk[0]][1].append(fk[3].lower())
            foreign[fk[0]][2].append((fk[4] or "").lower())
        tables.append({
            "name": name.lower(), "columns": [(r[1].lower(), k) for r, k in zip(info, kinds)],
            "rows": [tuple(_convert(v, k) for v, k in zip(row, kinds)) for row in rows],
            "primary_key": keys, "foreign_keys": [(c, t, r) for t, c, r in foreign.values()],
        })
    connection.close()
    return tables


def _create(table: dict, key: bool) -> str:
    columns = [f"{_name(c)} {k}" for c, k in table["columns"]]
    if key and table["primary_key"]:
        columns.append(f"PRIMARY KEY ({', '.join(map(_name, table['primary_key']))})")
    return f"CREATE TABLE {_name(table['name'])} ({', '.join(columns)})"


def _unique(table: dict) -> bool:
    if not table["primary_key"]:
        return False
    index = [i for i, (c, _) in enumerate(table["columns"]) if c in table["primary_key"]]
    keys = [tuple(row[i] for i in index) for row in table["rows"]]
    return len(set(keys)) == len(keys) and all(v is not None for k in keys for v in k)


def load_postgres(server: PostgresServer, sqlite_path: Path, db_id: str) -> None:
    """Create database ``db_id`` on ``server`` with the tables and rows of a SQLite file (primary
    keys where the data honours them; foreign keys ``NOT VALID``, where they resolve)."""
    import psycopg

    server.execute(f'CREATE DATABASE "{db_id}"')
    tables = read_sqlite(sqlite_path)
    with psycopg.connect(server.url(db_id), autocommit=True) as connection:
        for table in tables:
            connection.execute(_create(table, _unique(table)))
            names = ", ".join(_name(c) for c, _ in table["columns"])
            with connection.cursor().copy(f"COPY {_name(table['name'])} ({names}) FROM STDIN") as copy:
                for row in table["rows"]:
                    copy.write_row(row)
        for table in tables:
            for columns, other, referenced in table["foreign_keys"]:
                try:
                    connection.execute(
                        f"ALTER TABLE {_name(table['name'])} ADD FOREIGN KEY ({', '.join(map(_name, columns))}) "
                        f"REFERENCES {_name(other)} ({', '.join(map(_name, referenced))}) NOT VALID")
                except psycopg.Error:
                    pass  # Spider declares keys its data or schema does not honour


def load_duckdb(sqlite_path: Path, target: Path) -> None:
    """Write a DuckDB file with the tables and rows of a SQLite file (primary keys where the data
    honours them)."""
    import duckdb

    tables = read_sqlite(sqlite_path)
    target.parent.mkdir(parents=True, exist_ok=True)
    connection = duckdb.connect(str(target))
    try:
        for table in tables:
            connection.execute(_create(table, _unique(table)).replace("DOUBLE PRECISION", "DOUBLE"))
            if table["rows"]:
                marks = ", ".join("?" for _ in table["columns"])
                connection.executemany(f"INSERT INTO {_name(table['name'])} VALUES ({marks})", table["rows"])
    finally:
        connection.close()


def spider_database(db_id: str) -> Path:
    """The SQLite file of a Spider database packaged with the spider task."""
    from symgen_datasets.tasks import get_task

    return get_task("spider").databases().source_path(db_id)
