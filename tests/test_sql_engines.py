"""Text-to-SQL on PostgreSQL and DuckDB: a real PostgreSQL server started here (reached as a
superuser and as a read-only role) and real DuckDB files, both loaded from Spider databases.

Every hostile statement goes through the real verifier (worker processes, the engines' layers);
after each, every table's row count and checksum, the server's objects and roles, and the files
an attack would write are checked unchanged.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from tests.sql_servers import PostgresServer, load_duckdb, load_postgres, postgres_bindir, spider_database

from symgen_datasets.tasks import get_task
from symgen_datasets.verifiers.engines import QueryError, Target, engine_class, open_engine, transpile_query

DATABASES = ("concert_singer", "pets_1")
PWNED = Path("/tmp/symgen-pwned")


def _postgres_available() -> bool:
    if postgres_bindir() is None:
        return False
    if os.geteuid() == 0:
        import pwd

        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return False
    return True


@pytest.fixture(scope="module")
def pg():
    if not _postgres_available():
        pytest.skip("PostgreSQL's server binaries are not installed (apt-get install postgresql)")
    with PostgresServer() as server:
        for db_id in DATABASES:
            load_postgres(server, spider_database(db_id), db_id)
        server.execute("CREATE FUNCTION delete_singers() RETURNS int LANGUAGE sql AS 'DELETE FROM singer RETURNING 1'",
                       "concert_singer")
        server.execute("CREATE PROCEDURE wipe() LANGUAGE sql AS 'DELETE FROM singer'", "concert_singer")
        try:
            server.execute("CREATE EXTENSION IF NOT EXISTS dblink", "concert_singer")
        except Exception:  # noqa: BLE001 - contrib missing: the dblink attack is then refused anyway
            pass
        server.reader_url = server.create_reader()
        yield server


@pytest.fixture(scope="module")
def duck(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("duckdb")
    for db_id in DATABASES:
        load_duckdb(spider_database(db_id), folder / f"{db_id}.duckdb")
    return folder


def _pg_state(server: PostgresServer) -> dict:
    state = {}
    for db_id in DATABASES:
        tables = [r[0] for r in server.execute(
            "SELECT relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE nspname = 'public' AND relkind = 'r' ORDER BY relname", db_id)]
        for table in tables:
            state[f"{db_id}.{table}"] = server.execute(
                f'SELECT count(*), md5(coalesce(string_agg(t::text, \'|\' ORDER BY t::text), \'\')) FROM "{table}" t', db_id)[0]
        state[f"{db_id} objects"] = server.execute(
            "SELECT count(*) FROM pg_class WHERE relnamespace NOT IN (SELECT oid FROM pg_namespace WHERE nspname "
            "IN ('pg_catalog', 'information_schema', 'pg_toast'))", db_id)[0]
        state[f"{db_id} functions"] = server.execute("SELECT count(*) FROM pg_proc", db_id)[0]
        state[f"{db_id} extensions"] = server.execute("SELECT string_agg(extname, ',' ORDER BY extname) FROM pg_extension", db_id)[0]
        state[f"{db_id} large objects"] = server.execute("SELECT count(*) FROM pg_largeobject_metadata", db_id)[0]
    state["roles"] = server.execute("SELECT string_agg(rolname || rolsuper::text, ',' ORDER BY rolname) FROM pg_roles")[0]
    state["databases"] = server.execute("SELECT string_agg(datname, ',' ORDER BY datname) FROM pg_database")[0]
    state["settings"] = server.execute("SELECT count(*) FROM pg_file_settings")[0]
    auto = server.data / "postgresql.auto.conf"
    state["auto.conf"] = auto.read_text() if auto.exists() else None
    return state


def _duck_state(folder: Path) -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


#: Writes and schema changes every engine must refuse (a DELETE inside a WITH too).
WRITES = [
    "DROP TABLE singer",
    "DELETE FROM singer",
    "UPDATE singer SET age = 0",
    "INSERT INTO singer (singer_id) VALUES (999)",
    "CREATE TABLE pwned (x int)",
    "TRUNCATE singer",
    "WITH d AS (DELETE FROM singer RETURNING *) SELECT count(*) FROM d",
]

POSTGRES_ATTACKS = [
    *WRITES,
    "SELECT delete_singers()",
    "SELECT count(*) FROM singer WHERE delete_singers() > 0",
    "ALTER SYSTEM SET work_mem = '1GB'",
    "CREATE EXTENSION IF NOT EXISTS pgcrypto",
    f"COPY (SELECT 1) TO PROGRAM 'touch {PWNED}-program'",
    f"COPY singer TO '{PWNED}-file'",
    "SELECT pg_read_file('/etc/passwd')",
    "SELECT * FROM pg_read_file('/etc/passwd') AS t(x)",
    "SELECT lo_import('/etc/passwd')",
    "SELECT * FROM dblink('dbname=concert_singer user=postgres', 'DELETE FROM singer') AS t(x text)",
    "SELECT pg_sleep(600)",
    "SELECT count(*) FROM generate_series(1, 1000000000000)",
    "SET ROLE postgres",
    "RESET ROLE",
    "ALTER ROLE symgen_reader SUPERUSER",
    "CREATE ROLE pwned SUPERUSER LOGIN",
    "DO $$ BEGIN DELETE FROM singer; END $$",
    "CALL wipe()",
    "VACUUM singer",
    "SELECT 1; DELETE FROM singer",
    "SELECT count(*) FROM singer; DROP TABLE concert",
    "SELECT set_config('default_transaction_read_only', 'off', false)",
    "SELECT * INTO pwned FROM singer",
    "SELECT rolname, rolpassword FROM pg_authid",
    "SELECT * FROM pg_catalog.pg_file_settings",
    "SELECT singer_id FROM singer FOR UPDATE",
    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity",
]

DUCKDB_ATTACKS = [
    *WRITES,
    f"COPY singer TO '{PWNED}-file.csv'",
    f"COPY (SELECT 1) TO '{PWNED}-file.parquet' (FORMAT parquet)",
    "SELECT * FROM read_csv('/etc/passwd')",
    "SELECT * FROM read_text('/etc/passwd')",
    "SELECT * FROM '/etc/passwd'",
    "SELECT * FROM glob('/etc/*')",
    "INSTALL httpfs",
    "LOAD httpfs",
    f"ATTACH '{PWNED}.duckdb' AS pwned",
    "DETACH db",
    "SET enable_external_access = true",
    "PRAGMA enable_external_access",
    "CREATE MACRO pwned(x) AS x",
    "SELECT count(*) FROM range(1000000000000)",
    "SELECT 1; DROP TABLE concert",
    "CHECKPOINT",
    "EXPORT DATABASE '/tmp/symgen-pwned-export'",
    "SELECT * FROM duckdb_settings()",
    "CALL pragma_version()",
]


def _verify(knowledge_url: str, db_id: str, queries: list[str], timeout_s: float = 2.0):
    task = get_task("spider")
    knowledge = task.load_knowledge({"db_url": knowledge_url})
    knowledge.prepare([{"db_id": db_id}])
    try:
        with task.make_verifier(knowledge, timeout_s) as verifier:
            context = verifier.context({"db_id": db_id})
            return next(iter(verifier.execute_stream([(context, queries)])))
    finally:
        knowledge.cleanup()


@pytest.fixture(scope="module")
def verify_on():
    """``run(url, db_id, queries)``: outcomes through the task's real verifier (worker processes),
    one verifier per URL for the module, as one run keeps its workers."""
    opened = {}

    def run(url: str, db_id: str, queries: list[str]):
        if (url, db_id) not in opened:
            task = get_task("spider")
            knowledge = task.load_knowledge({"db_url": url})
            knowledge.prepare([{"db_id": db_id}])
            opened[url, db_id] = (knowledge, task.make_verifier(knowledge, 2.0))
        knowledge, verifier = opened[url, db_id]
        return next(iter(verifier.execute_stream([(verifier.context({"db_id": db_id}), queries)])))

    yield run
    for knowledge, verifier in opened.values():
        verifier.close()
        knowledge.cleanup()


def _files_written() -> list[str]:
    return [str(p) for p in Path("/tmp").glob("symgen-pwned*")]


@pytest.mark.parametrize("role", ["superuser", "reader"])
@pytest.mark.parametrize("attack", POSTGRES_ATTACKS)
def test_postgres_attack_changes_nothing(pg, verify_on, role, attack):
    url = pg.url() if role == "superuser" else pg.reader_url
    before = _pg_state(pg)
    outcome = verify_on(url, "concert_singer", [attack])[0]
    assert not outcome.ok
    assert "root:" not in (outcome.error or "")
    assert _pg_state(pg) == before
    assert not _files_written()


@pytest.mark.parametrize("role", ["superuser", "reader"])
def test_postgres_verifier_still_answers_after_the_attacks(pg, verify_on, role):
    url = pg.url() if role == "superuser" else pg.reader_url
    assert verify_on(url, "concert_singer", ["SELECT count(*) FROM singer"])[0].ok


def test_postgres_layers_below_the_guard_hold_on_their_own(pg, monkeypatch):
    """With the statement guard switched off, the read-only transaction, the cursor and the
    dropped role still stop every attack that would change something (in-process session)."""
    from symgen_datasets.verifiers.engines import guard

    monkeypatch.setattr(guard, "check_query", lambda *args: None)
    engine = open_engine(pg.url())
    engine.begin_run(["concert_singer"])
    before = _pg_state(pg)
    try:
        session = engine_class("postgresql").connect(engine.target("concert_singer", 2.0))
        refused = []
        for attack in POSTGRES_ATTACKS:
            try:
                rows = session.fetch(attack, 10)
            except QueryError as error:
                refused.append(attack)
                assert "root:" not in str(error)
            else:
                assert "root:" not in json.dumps(rows, default=str), attack
        assert _pg_state(pg) == before
        assert not _files_written()
        assert f"COPY (SELECT 1) TO PROGRAM 'touch {PWNED}-program'" in refused
        assert "SELECT pg_read_file('/etc/passwd')" in refused  # pg_read_all_data may not read server files
        assert "SELECT lo_import('/etc/passwd')" in refused
        assert "SELECT 1; DELETE FROM singer" in refused  # the extended protocol takes one statement
        assert session.fetch("SELECT count(*) FROM singer", 10) == [(6,)]
    finally:
        engine.end_run()


@pytest.mark.parametrize("attack", DUCKDB_ATTACKS)
def test_duckdb_attack_changes_nothing(duck, verify_on, attack):
    url = f"duckdb:///{duck}/{{db_id}}.duckdb"
    before = _duck_state(duck)
    outcome = verify_on(url, "concert_singer", [attack])[0]
    assert not outcome.ok
    assert "root:" not in (outcome.error or "")
    assert _duck_state(duck) == before
    assert not _files_written()


def test_duckdb_verifier_still_answers_after_the_attacks(duck, verify_on):
    assert verify_on(f"duckdb:///{duck}/{{db_id}}.duckdb", "concert_singer", ["SELECT count(*) FROM singer"])[0].ok


def test_duckdb_layers_below_the_guard_hold_on_their_own(duck, monkeypatch):
    from symgen_datasets.verifiers.engines import guard

    monkeypatch.setattr(guard, "check_query", lambda *args: None)
    before = _duck_state(duck)
    engine = open_engine(f"duckdb:///{duck}/{{db_id}}.duckdb")
    session = engine_class("duckdb").connect(engine.target("concert_singer", 2.0))
    for attack in DUCKDB_ATTACKS:
        try:
            rows = session.fetch(attack, 2.0, 10)
        except QueryError as error:
            assert "root:" not in str(error)
        else:
            assert "root:" not in json.dumps(rows, default=str), attack
    session.connection.close()
    engine.end_run()
    assert _duck_state(duck) == before
    assert not _files_written()


@pytest.mark.parametrize("engine", ["postgresql", "duckdb"])
def test_a_query_past_the_time_limit_is_cancelled_and_the_worker_goes_on(pg, duck, engine):
    url = pg.url() if engine == "postgresql" else f"duckdb:///{duck}/{{db_id}}.duckdb"
    slow = ("SELECT count(*) FROM singer a, singer b, singer c, singer d, singer e, singer f, singer g, singer h, "
            "singer i, singer j, singer k WHERE length(a.name || b.name || c.name || d.name || e.name || f.name || g.name || "
            "h.name || i.name || j.name || k.name) > 0")
    outcomes = _verify(url, "concert_singer", [slow, "SELECT count(*) FROM singer"], timeout_s=1.0)
    assert outcomes[0].status == "timeout"
    assert outcomes[1].ok and outcomes[1].num_rows == 1


def test_results_agree_across_engines_where_the_query_transpiles(pg, duck):
    """The same Spider dev queries give the same result keys on SQLite, PostgreSQL and DuckDB
    (values normalised: Decimal, float and int compare as the vote compares them)."""
    rows = [r for r in json.loads(get_task("spider").references_path().read_text()) if r["db_id"] == "concert_singer"][:12]
    queries = [r["query"] for r in rows]
    sqlite_keys = [o.key for o in _verify_sqlite("concert_singer", queries)]
    for url, dialect in ((pg.reader_url, "postgres"), (f"duckdb:///{duck}/{{db_id}}.duckdb", "duckdb")):
        outcomes = _verify(url, "concert_singer", [transpile_query(q, dialect) for q in queries])
        same = sum(o.ok and o.key == k for o, k in zip(outcomes, sqlite_keys))
        assert same >= 0.75 * len(queries), (dialect, same)


def _verify_sqlite(db_id: str, queries: list[str]):
    task = get_task("spider")
    knowledge = task.load_knowledge({})
    knowledge.prepare([{"db_id": db_id}])
    try:
        with task.make_verifier(knowledge, 2.0) as verifier:
            return next(iter(verifier.execute_stream([(verifier.context({"db_id": db_id}), queries)])))
    finally:
        knowledge.cleanup()


def test_engine_knowledge_introspects_schema_and_rows(pg, duck):
    for url in (pg.reader_url, f"duckdb:///{duck}/{{db_id}}.duckdb"):
        engine = open_engine(url)
        assert engine.list_databases() == sorted(DATABASES)
        tables = {t.name: t for t in engine.tables("concert_singer")}
        assert set(tables) == {"stadium", "singer", "concert", "singer_in_concert"}
        assert tables["stadium"].primary_key == ("stadium_id",)
        assert "PRIMARY KEY (stadium_id)" in tables["stadium"].create_statement()
        assert engine.count_rows("concert_singer", "singer") == 6
        assert len(engine.rows("concert_singer", "singer", 2, 3)) == 3
        engine.end_run()
    with pytest.raises(Exception, match="unknown database URL"):
        open_engine("mysql://u@h/db")


def test_the_target_never_shows_the_password(pg):
    target = Target("postgresql", pg.url("concert_singer", password="s3cret"))
    assert "s3cret" not in str(target)


@pytest.mark.parametrize("engine", ["postgresql", "duckdb"])
def test_generate_on_an_engine_keeps_rows_in_its_dialect_and_the_card_names_it(pg, duck, tmp_path, engine, recwarn):
    """``symgen generate --db-url`` end to end through a loopback TGI server right half the time:
    the packaged (SQLite) demonstrations are transpiled, kept rows carry the dialect, the card
    names the engine and its version, and the URL's password appears nowhere."""
    import datasets

    from symgen_datasets.cli import main
    from tests.llm_servers import LLMServer, OracleResponder

    dialect = {"postgresql": "postgres", "duckdb": "duckdb"}[engine]
    url = pg.url(password="s3cret-pw") if engine == "postgresql" else f"duckdb:///{duck}/{{db_id}}.duckdb"
    dev = [r for r in json.loads(get_task("spider").references_path().read_text()) if r["db_id"] in DATABASES]
    rows = []
    for row in dev:
        try:
            rows.append(dict(row, query=transpile_query(row["query"], dialect)))
        except ValueError:
            continue
    keys = _verify(url, "concert_singer", [r["query"] for r in rows if r["db_id"] == "concert_singer"])
    good = [r for r, k in zip([r for r in rows if r["db_id"] == "concert_singer"], keys) if k.ok][:12]
    questions = tmp_path / "questions.jsonl"
    questions.write_text("".join(json.dumps({k: r[k] for k in ("question", "db_id")}) + "\n" for r in good))
    output = tmp_path / "out"
    with LLMServer(OracleResponder({r["question"].strip(): r["query"] for r in good}, accuracy=0.5)) as server:
        code = main(["generate", "spider", "--questions", str(questions), "--db-url", url, "--generator",
                     f"tgi:{server.url}", "--num-samples", "8", "--min-votes", "3", "--output", str(output)])
    assert code == 0
    kept = datasets.load_dataset(str(output), split="train")
    assert len(kept) >= 1 and set(kept["dialect"]) == {dialect}
    card = (output / "README.md").read_text()
    name = {"postgresql": "PostgreSQL 15", "duckdb": "DuckDB "}[engine]
    assert f"| verifier engine | {name}" in card
    assert f"| verifier dialect | {dialect} |" in card
    assert "statement guard" in card
    every_file = "".join(p.read_text(errors="replace") for p in output.rglob("*") if p.is_file() and p.suffix in (".md", ".json"))
    assert "s3cret-pw" not in every_file
    assert any("demonstrations for" in str(w.message) and "transpiled, not run" in str(w.message) for w in recwarn)
    # `symgen verify` re-executes every candidate on the engine and finds the published kept set
    assert main(["verify", str(output), "--db-url", url]) == 0


def test_db_url_errors_say_what_to_do(pg, tmp_path):
    task = get_task("spider")
    with pytest.raises(Exception, match="give a database URL with --db-url") as error:
        task.load_knowledge({"db_dir": pg.url(password="pw123")})
    assert "pw123" not in str(error.value)
    with pytest.raises(Exception, match="--db-dir and --db-url both given"):
        task.load_knowledge({"db_dir": str(tmp_path), "db_url": pg.url()})
    with pytest.raises(Exception, match=r"cannot connect to database 'nosuch'") as error:
        task.load_knowledge({"db_url": pg.url(password="pw123")}).check("nosuch", "questions.jsonl line 3")
    assert "pw123" not in str(error.value) and "questions.jsonl line 3" in str(error.value)
    knowledge = task.load_knowledge({"db_url": pg.url(), "db_ids": "pets_1"})
    assert task.question_contexts(knowledge) == [{"db_id": "pets_1"}]
    assert task.load_knowledge({"db_url": pg.url("concert_singer")}).db_ids == ["concert_singer"]


def test_a_sqlite_url_is_the_db_dir_it_names():
    task = get_task("spider")
    packaged = task.packaged / "database"
    knowledge = task.load_knowledge({"db_url": f"sqlite:///{packaged}/{{db_id}}/{{db_id}}.sqlite"})
    assert knowledge.db_ids == task.databases().db_ids and knowledge.engine.family == "sqlite"
    with pytest.raises(Exception, match="Spider's layout"):
        task.load_knowledge({"db_url": f"sqlite:///{packaged}/x.sqlite"})


def test_check_and_evaluate_on_duckdb_from_the_command_line(duck, tmp_path):
    """``symgen check --db-url`` accepts transpiled gold; ``symgen evaluate --db-url`` scores the
    same predictions as on SQLite."""
    from symgen_datasets.cli import main

    url = f"duckdb:///{duck}/{{db_id}}.duckdb"
    dev = [r for r in json.loads(get_task("spider").references_path().read_text()) if r["db_id"] == "pets_1"][:10]
    gold = [dict(r, query=transpile_query(r["query"], "duckdb")) for r in dev]
    good = [r for r, o in zip(gold, _verify(url, "pets_1", [r["query"] for r in gold])) if o.ok]
    assert len(good) >= 7
    references = tmp_path / "references.jsonl"
    references.write_text("".join(json.dumps({k: r[k] for k in ("question", "query", "db_id")}) + "\n" for r in good))
    report = tmp_path / "check.jsonl"
    assert main(["check", "spider", "--input", str(references), "--output", str(report), "--db-url", url]) == 0
    assert all(json.loads(line)["valid"] for line in report.read_text().splitlines())
    predictions = tmp_path / "predictions.jsonl"
    wrong = "SELECT count(*) FROM pets WHERE weight > 1000"
    predictions.write_text("".join(json.dumps({"query": wrong if i == 0 else r["query"]}) + "\n" for i, r in enumerate(good)))
    assert main(["evaluate", "--task", "spider", "--references", str(references), "--predictions", str(predictions),
                 "--db-url", url, "--output-dir", str(tmp_path / "eval")]) == 0
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    value = metrics.get("metrics", metrics)["execution_accuracy"]
    assert value == pytest.approx((len(good) - 1) / len(good))


def test_a_failing_candidate_never_fails_the_next_ones(pg, verify_on):
    """Errors at planning time (a bare column under an aggregate), at run time (division by zero)
    and refused ones, interleaved with good queries past a batch of cursors: each good query
    gets its result, as it does alone."""
    bad = ["SELECT MAX(capacity), average FROM stadium", "SELECT 1 / (count(*) - count(*)) FROM singer",
           "SELEC count(*) FROM singer"]
    good = ["SELECT count(*) FROM singer", "SELECT name FROM stadium ORDER BY capacity DESC LIMIT 1",
            "SELECT avg(age) FROM singer"]
    queries = [q for i in range(30) for q in (bad[i % 3], f"{good[i % 3]} -- {i}")]
    outcomes = verify_on(pg.reader_url, "concert_singer", queries)
    alone = {q: verify_on(pg.reader_url, "concert_singer", [q])[0] for q in good}
    for query, outcome in zip(queries, outcomes):
        if query in bad:
            assert not outcome.ok, query
        else:
            expected = alone[query.split(" -- ")[0]]
            assert outcome.ok and outcome.key == expected.key, (query, outcome.error)
