"""Text-to-SQL (Spider, GeoQuery-SQL): databases as task knowledge, execution as verification.

The informative prompt follows SymGen (Ye et al., EMNLP 2023, §2.1): an instruction, the task
knowledge (the database schema as ``CREATE TABLE`` statements with example rows, in the format of
Rajkumar et al., 2022) and the demonstrations, fitted to a token budget. Field names are
Spider's: ``question``, ``query``, ``db_id``.
"""

from __future__ import annotations

import random
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Sequence

import sqlparse

from ..metrics.sql import OFFICIAL_TIMEOUT_S, sql_scores
from ..errors import InputError
from ..verifiers import SQLiteVerifier
from ..verifiers.sqlite import DEFAULT_EMPTY_RESULTS, EMPTY_RESULT_POLICIES
from .base import SamplingDefaults, Task, TaskOption, check_aligned
from ..verifiers.engines import db_ids_option
from .databases import Database, DatabaseDirectory, EngineDatabases, format_rows

_DIALECT_WORDS = r"(?:sql|sqlite|postgresql|postgres|psql|pgsql|duckdb)"
_FENCE = re.compile(r"```" + _DIALECT_WORDS + r"?\s*\n?(.*?)(?:```|$)", re.S | re.I)
_PROGRAM_START = re.compile(r"^\s*(select|with)\b", re.I)

#: Example rows per table in prompts, from most to least (dropped to fit the token budget).
EXAMPLE_ROWS = (3, 1, 0)


def one_line(query: str) -> str:
    """A SQL query on one line (white space folded), as demonstrations are shown in prompts."""
    return " ".join(query.split())


def _empty_policy(value: str) -> str:
    """``--empty-results``: one of ``EMPTY_RESULT_POLICIES`` (see :class:`~symgen_datasets.verifiers.SQLiteVerifier`)."""
    if value not in EMPTY_RESULT_POLICIES:
        raise InputError(f"--empty-results {value!r}: expected one of {', '.join(EMPTY_RESULT_POLICIES)}")
    return value


def _sql_sampling() -> SamplingDefaults:
    return SamplingDefaults(
        question_max_new_tokens=48, answer_max_new_tokens=200,
        question_stop=("\n",), answer_stop=("\n\n", "-- Question", "\n--"),
    )


@dataclass(frozen=True)
class TextToSQLTask(Task):
    """Text-to-SQL on SQLite databases laid out as Spider's (``<db_id>/<db_id>.sqlite``), or on the
    databases of a PostgreSQL server or DuckDB files (``--db-url``; see
    :mod:`symgen_datasets.verifiers.engines`).

    Knowledge: a :class:`DatabaseDirectory` (``--db-dir``, default: the packaged databases),
    snapshotted once per run, or :class:`EngineDatabases` (``--db-url``), one read view per run.
    Verifier: :class:`~symgen_datasets.verifiers.SQLiteVerifier` (the SQL verifier, on any engine).
    Question generation goes round the databases; a task model reads the question and, when the
    task has several databases, the schema (serialised as in the prompts). Evaluation: execution
    accuracy with the official Spider test-suite evaluator's semantics, exact match after
    normalisation, the valid-SQL rate and, where ``report_hardness``, Spider's hardness levels
    (see :mod:`symgen_datasets.metrics.sql`).

    Instance attributes (besides :class:`Task`'s):
        report_hardness: break evaluation down by Spider's hardness levels.
    """

    sampling: SamplingDefaults = _sql_sampling()
    report_hardness: bool = False

    family: ClassVar[str] = "text-to-sql"
    question_field: ClassVar[str] = "question"
    answer_field: ClassVar[str] = "query"
    context_fields: ClassVar[tuple[str, ...]] = ("db_id",)
    field_descriptions: ClassVar[dict[str, str]] = {
        "question": "natural-language question",
        "query": "the SQL query (for kept rows: the representative of the winning cluster)",
        "db_id": "database folder name",
    }
    extra_row_fields: ClassVar[dict[str, str]] = {
        "dialect": "the SQL dialect (sqlglot's name) the query is written in and was executed on: sqlite, postgres, duckdb",
    }
    tags: ClassVar[tuple[str, ...]] = ("text-to-sql",)
    program_pattern: ClassVar[re.Pattern] = re.compile(
        r"^\s*(?:select\b.*\bfrom\b|with\s+\w+\s+as\s*\(|(?:insert|update|delete|create|drop)\s)", re.I)
    task_categories: ClassVar[tuple[str, ...]] = ("text-generation", "table-question-answering")
    question_template: ClassVar[str] = "text_to_sql_question.j2"
    answer_template: ClassVar[str] = "text_to_sql_answer.j2"
    extrapolation_template: ClassVar[str] = "text_to_sql_extrapolate.j2"
    options: ClassVar[tuple[TaskOption, ...]] = (
        TaskOption("db_dir", "folder of <db_id>/<db_id>.sqlite; default: the task's packaged databases", metavar="DIR"),
        TaskOption("db_url", "the databases as a URL in which {db_id} stands for a row's database: "
                   "postgresql://USER[:PASSWORD]@HOST:PORT/{db_id}, duckdb:///DIR/{db_id}.duckdb or "
                   "sqlite:///DIR/{db_id}/{db_id}.sqlite (what --db-dir DIR means)", metavar="URL"),
        TaskOption("db_ids", "the databases question generation goes round, separated by commas; default: every "
                   "database of --db-url / --db-dir", metavar="A,B,C"),
        TaskOption("empty_results", "how results with no rows vote: reject (they agree with each other, but a question "
                   "they win is not kept), abstain (no vote) or agree (a result like any other); default: "
                   + DEFAULT_EMPTY_RESULTS, default=DEFAULT_EMPTY_RESULTS, type=_empty_policy,
                   metavar="|".join(EMPTY_RESULT_POLICIES)),
    )
    verifier_class: ClassVar[type] = SQLiteVerifier
    primary_metric: ClassVar[str] = "execution_accuracy"

    # --- knowledge -----------------------------------------------------------------------------

    def load_knowledge(self, options: dict[str, Any], snapshot_dir: str | Path | None = None) -> DatabaseDirectory:
        """The task's databases: ``options["db_dir"]``, or the packaged ones; snapshots go to
        ``snapshot_dir`` (see :class:`DatabaseDirectory`)."""
        db_dir, db_url = options.get("db_dir"), options.get("db_url")
        empty = _empty_policy(options.get("empty_results") or DEFAULT_EMPTY_RESULTS)
        db_ids = db_ids_option(options.get("db_ids"))
        if db_dir is not None and "://" in str(db_dir):
            from ..redaction import redact_url

            raise InputError(f"--db-dir {redact_url(str(db_dir))}: --db-dir takes a folder; give a database URL with "
                             "--db-url (postgresql://USER@HOST:PORT/{db_id}, duckdb:///DIR/{db_id}.duckdb)")
        if db_dir is not None and db_url is not None:
            raise InputError("--db-dir and --db-url both given; give one (--db-dir DIR is --db-url sqlite:///DIR/{db_id}/{db_id}.sqlite)")
        if db_url is not None and str(db_url).lower().startswith("sqlite:"):
            from ..verifiers.engines import file_pattern

            pattern = file_pattern(str(db_url))
            if not pattern.endswith("/{db_id}/{db_id}.sqlite"):
                raise InputError(f"--db-url {db_url}: SQLite databases are read as DIR/{{db_id}}/{{db_id}}.sqlite "
                                 "(Spider's layout); write sqlite:///DIR/{db_id}/{db_id}.sqlite")
            db_dir = pattern[: -len("/{db_id}/{db_id}.sqlite")]
        elif db_url is not None:
            return EngineDatabases(str(db_url), db_ids, empty)
        return DatabaseDirectory(db_dir if db_dir is not None else self.packaged / "database", snapshot_dir, empty, db_ids)

    def make_verifier(self, knowledge: DatabaseDirectory, timeout_s: float = 5.0) -> SQLiteVerifier:
        """The SQL verifier over ``knowledge``, with the task's ``--empty-results`` policy."""
        return SQLiteVerifier(knowledge, timeout_s=timeout_s, empty_results=knowledge.empty_results)

    def databases(self, db_dir: str | Path | None = None, snapshot_dir: str | Path | None = None) -> DatabaseDirectory:
        """:meth:`load_knowledge` by argument: the databases of ``db_dir`` (default: packaged)."""
        return self.load_knowledge({"db_dir": db_dir}, snapshot_dir)

    def question_contexts(self, knowledge: DatabaseDirectory) -> list[dict[str, str]]:
        return [{"db_id": db_id} for db_id in knowledge.question_db_ids]

    # --- prompts -------------------------------------------------------------------------------

    def _tables(self, database: Database, row_picker: Callable, num_rows: int) -> list[dict]:
        tables = []
        for table in database.tables:
            rows = row_picker(table, num_rows) if num_rows else []
            tables.append(
                {
                    "name": table.name,
                    "create": table.create,
                    "header": "\t".join(table.columns),
                    "rows": format_rows(rows),
                }
            )
        return tables

    def schema_text(self, database: Database, num_rows: int = 0, rng: random.Random | None = None) -> str:
        """The database block of the prompts (``CREATE TABLE`` statements, each followed by
        ``num_rows`` example rows drawn by ``rng``): what a task model reads besides the
        question when the task has several databases."""
        picker = rng or random.Random(0)
        tables = self._tables(database, lambda t, k: database.random_rows(t, k, picker), num_rows)
        return self.render("text_to_sql_schema.j2", tables=tables).strip()

    def question_prompt(self, context: dict[str, str], knowledge: DatabaseDirectory, demonstrations: Sequence[dict],
                        rng: random.Random, count_tokens: Callable[[str], int], max_tokens: int | None = None) -> str:
        """The question-generation prompt for the database ``context["db_id"]``: schema with
        random example rows and the demonstrations' questions in an order shuffled by ``rng``
        (demonstrations on the same database first), fitted to ``max_tokens``.

        Raises:
            InputError: the prompt cannot fit ``max_tokens``.
        """
        database = knowledge.get(context["db_id"])
        demos = list(demonstrations)
        rng.shuffle(demos)
        demos.sort(key=lambda d: d["db_id"] != database.db_id)
        row_seed = rng.random()

        def render(num_demos: int, num_rows: int) -> str:
            picker = random.Random(row_seed)
            tables = self._tables(database, lambda t, k: database.random_rows(t, k, picker), num_rows)
            return self.render(
                self.question_template,
                instruction=self.dialect_instruction(knowledge),
                dialect_name=knowledge.engine.pretty_name,
                tables=tables,
                demonstrations=demos[:num_demos],
            ).rstrip("\n")  # the model continues the last "-- Question:" line

        what = f"the question-generation prompt for database {database.db_id!r}"
        return self.fit_prompt(render, len(demos), count_tokens, max_tokens, what, EXAMPLE_ROWS)

    def answer_prompt(self, row: dict[str, str], knowledge: DatabaseDirectory, demonstrations: Sequence[dict],
                      count_tokens: Callable[[str], int], max_tokens: int | None = None) -> str:
        """The answer-generation prompt: schema with rows whose values match the question, the
        demonstrations (same database first, queries on one line) and the question, fitted to
        ``max_tokens``.

        Raises:
            InputError: the prompt cannot fit ``max_tokens``.
        """
        database = knowledge.get(row["db_id"])
        question = row["question"]
        demos = sorted(demonstrations, key=lambda d: d["db_id"] != database.db_id)
        demos = [{"question": d["question"], "query": one_line(d["query"])} for d in demos]

        def render(num_demos: int, num_rows: int) -> str:
            tables = self._tables(database, lambda t, k: database.matching_rows(t, question, k), num_rows)
            return self.render(
                self.answer_template,
                instruction=self.dialect_instruction(knowledge),
                dialect_name=knowledge.engine.pretty_name,
                tables=tables,
                demonstrations=demos[:num_demos],
                question=question,
            )

        shown = question if len(question) <= 60 else question[:57] + "..."
        what = f"the answer-generation prompt for database {database.db_id!r} and question {shown!r}"
        return self.fit_prompt(render, len(demos), count_tokens, max_tokens, what, EXAMPLE_ROWS)

    def extrapolation_prompt(self, context: dict, errors: Sequence[dict], knowledge: DatabaseDirectory,
                             demonstrations: Sequence[dict], count_tokens: Callable[[str], int],
                             max_tokens: int | None = None) -> str:
        """S3's error-extrapolation prompt for the database ``context["db_id"]``: its schema with
        example rows (as question generation shows it), then the errors (question, correct
        query and its result, the model's query and what it did), asking for a new question of
        the same kind; fitted to ``max_tokens`` by dropping errors, then example rows.

        Raises:
            InputError: the prompt cannot fit ``max_tokens``.
        """
        database = knowledge.get(context["db_id"])
        errors = [dict(e, query=one_line(e["query"])) for e in errors]

        def render(num_errors: int, num_rows: int) -> str:
            picker = random.Random(0)
            tables = self._tables(database, lambda t, k: database.random_rows(t, k, picker), num_rows)
            return self.render(self.extrapolation_template, instruction=self.dialect_instruction(knowledge),
                               dialect_name=knowledge.engine.pretty_name, tables=tables,
                               errors=errors[:num_errors]).rstrip("\n")

        what = f"the error-extrapolation prompt for database {database.db_id!r}"
        return self.fit_prompt(render, len(errors), count_tokens, max_tokens, what, EXAMPLE_ROWS)

    def dialect_instruction(self, knowledge) -> str:
        """The instruction, naming the knowledge's engine where the task's names SQLite
        ("SQLite database of ..." becomes "PostgreSQL database of ..." on PostgreSQL)."""
        name = knowledge.engine.pretty_name
        return self.instruction if name == "SQLite" else self.instruction.replace("SQLite", name)

    def adapt_demonstrations(self, demonstrations: Sequence[dict], knowledge, verifier) -> list[dict]:
        """The demonstrations in the knowledge's dialect: SQLite queries (the packaged ones) are
        transpiled by sqlglot; those that do not transpile, or that fail on their database where
        the URL reaches it, are dropped with a warning that counts them.

        Raises:
            InputError: no demonstration is left (give ``--demos`` written for the engine).
        """
        from ..verifiers.engines import transpile_query

        engine = knowledge.engine
        if engine.dialect == "sqlite":
            return list(demonstrations)
        adapted, untranspiled = [], 0
        for demo in demonstrations:
            try:
                adapted.append(dict(demo, query=transpile_query(demo["query"], engine.dialect)))
            except ValueError:
                untranspiled += 1
        runnable = [i for i, demo in enumerate(adapted) if knowledge.reaches(demo["db_id"])]
        outcomes = verifier.execute_stream((verifier.context(adapted[i]), [adapted[i]["query"]]) for i in runnable)
        failed = {i for i, batch in zip(runnable, outcomes) if not batch[0].ok}
        kept = [demo for i, demo in enumerate(adapted) if i not in failed]
        if untranspiled or failed or len(runnable) < len(adapted):
            warnings.warn(
                f"demonstrations for {engine.pretty_name}: {len(kept)} of {len(demonstrations)} kept; "
                f"{untranspiled} do not transpile from SQLite, {len(failed)} fail on their database, "
                f"{len(adapted) - len(runnable)} are on databases the URL does not reach (transpiled, not run)",
                stacklevel=2)
        if not kept:
            raise InputError(f"no demonstration can be used on {engine.pretty_name}; give --demos FILE with queries "
                             f"written for it (JSON lines with question, query, db_id)")
        return kept

    def run_row_fields(self, knowledge) -> dict[str, str]:
        """Every kept row's ``dialect``: sqlglot's name of the dialect its query is written in
        and was verified on (``sqlite``, ``postgres``, ``duckdb``)."""
        return {"dialect": knowledge.engine.dialect}

    # --- post-processing -----------------------------------------------------------------------

    def parse_answer(self, text: str, row: dict[str, str] | None = None) -> str | None:
        """Extract the SQL program from a completion: the first statement, from a code fence if
        there is one; ``None`` unless it starts with ``SELECT`` or ``WITH``."""
        fenced = _FENCE.search(text)
        if fenced:
            text = fenced.group(1)
        for stop in self.sampling.answer_stop:
            text = text.split(stop)[0] if stop.strip() else text
        text = text.split("\n\n")[0].strip()
        text = re.sub(r"^\s*" + _DIALECT_WORDS + r"\s*:\s*", "", text, flags=re.I)
        statements = [s.strip() for s in sqlparse.split(text) if s.strip()]
        if not statements:
            return None
        program = statements[0].rstrip(";").strip()
        return program if _PROGRAM_START.match(program) else None

    # --- verification and training ------------------------------------------------------------

    def training_input(self, row: dict, knowledge: DatabaseDirectory) -> str:
        """The question, preceded by the database's schema when the task has several databases
        (serialised by the same code as the prompts, without example rows)."""
        if len(knowledge.db_ids) == 1:
            return row["question"]
        return f"{self.schema_text(knowledge.get(row['db_id']))}\n-- Question: {row['question']}"

    def evaluate(self, references: Sequence[dict], predictions: Sequence[str | None], knowledge: DatabaseDirectory,
                 timeout_s: float = OFFICIAL_TIMEOUT_S):
        """Execution accuracy (the official Spider test-suite evaluator's semantics, one database
        per ``db_id``), exact match, valid SQL and, where :attr:`report_hardness`, the breakdown
        by hardness; see :func:`symgen_datasets.metrics.sql.sql_scores`."""
        check_aligned(references, predictions)
        return sql_scores(references, predictions, lambda db_id: knowledge.target(db_id, timeout_s), timeout_s=timeout_s,
                          by_hardness=self.report_hardness, dialect=knowledge.engine.dialect)

    def card_summary(self) -> str:
        return ("Synthetic text-to-SQL data: questions with SQL queries (Spider's field names `question`, `query`, "
                "`db_id`); every candidate query was executed on the real database and a question was kept only when "
                "enough candidates agreed on the execution result.")


SPIDER = TextToSQLTask(
    name="spider",
    pretty_name="Spider (synthetic, SymGen)",
    description="cross-database text-to-SQL on Spider's SQLite databases",
    license="cc-by-sa-4.0",
    source_datasets=("xlangai/spider",),
    data_dir="spider",
    instruction="SQLite database of the Spider benchmark.",
    dev_file="dev.json",
    report_hardness=True,
)

GEOQUERY_SQL = TextToSQLTask(
    name="geoquery_sql",
    pretty_name="GeoQuery-SQL (synthetic, SymGen)",
    description="questions about US geography with SQL on the GeoQuery database",
    license="apache-2.0",
    source_datasets=("HKUNLP/SymGen geoquery_sql",),
    data_dir="geoquery_sql",
    instruction="SQLite database of US geography (GeoQuery): states, cities, rivers, lakes, mountains, borders.",
)
