"""Text-to-SQL tasks (Spider, GeoQuery-SQL): informative prompts and answer extraction.

The informative prompt follows SymGen (Ye et al., EMNLP 2023, §2.1): an instruction, the task
knowledge (the database schema as ``CREATE TABLE`` statements with example rows) and the
demonstrations, fitted to a token budget.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import sqlparse

from .. import prompts
from ..errors import InputError
from ..io import MAX_INPUT_CHARS, check_lengths, read_records, validate_record
from .databases import Database, DatabaseDirectory, format_rows

#: SymGen's question length filter: keep questions with MIN_WORDS < words < MAX_WORDS.
MIN_WORDS, MAX_WORDS = 5, 40

_PREFIX = re.compile(r"^\s*(?:--\s*)?(?:\d+[.)]\s*|[-*]\s+)?(?:question\s*\d*\s*[:.]\s*)?", re.I)
_FENCE = re.compile(r"```(?:sql|sqlite)?\s*\n?(.*?)(?:```|$)", re.S | re.I)
_PROGRAM_START = re.compile(r"^\s*(select|with)\b", re.I)


def _schema(name: str) -> dict[str, Any]:
    return json.loads(resources.files("symgen_datasets.tasks").joinpath("schemas", name).read_text())


def one_line(query: str) -> str:
    """A SQL query on one line (white space folded), as demonstrations are shown in prompts."""
    return " ".join(query.split())


def question_key(question: str) -> str:
    """Normal form of a question for deduplication: lower case, words only."""
    return " ".join(re.findall(r"\w+", question.lower()))


@dataclass(frozen=True)
class SamplingDefaults:
    """Per-stage generation limits of a task (tokens)."""

    question_max_new_tokens: int = 48
    answer_max_new_tokens: int = 200
    question_stop: tuple[str, ...] = ("\n",)
    answer_stop: tuple[str, ...] = ("\n\n", "-- Question", "\n--")


@dataclass(frozen=True)
class TextToSQLTask:
    """A text-to-SQL task: where its defaults live and how its prompts look.

    Attributes:
        name: the task name on the command line.
        instruction: the first line of every prompt.
        data_dir: the packaged defaults (``10_shot.jsonl`` and ``database/``).
        default_num_questions: ``--num-questions`` default (small: the embedded model is slow).
        license: the license of the task's source data (inherited by generated datasets).
        source_datasets: Hub ids of the source data, for dataset cards.
        prompt_token_budget: prompts are fitted to this many tokens.
    """

    name: str
    instruction: str
    data_dir: str
    pretty_name: str
    license: str
    source_datasets: tuple[str, ...]
    default_num_questions: int = 20
    prompt_token_budget: int = 1536
    sampling: SamplingDefaults = field(default_factory=SamplingDefaults)

    demonstration_schema = _schema("text_to_sql_demonstration.schema.json")
    question_schema = _schema("text_to_sql_question.schema.json")
    row_schema = _schema("text_to_sql_row.schema.json")
    question_template = "text_to_sql_question.j2"
    answer_template = "text_to_sql_answer.j2"

    # --- task knowledge and inputs -------------------------------------------------------------

    @property
    def packaged(self) -> Path:
        return Path(str(resources.files("symgen_datasets.tasks").joinpath("data", self.data_dir)))

    def databases(self, db_dir: str | Path | None = None, snapshot_dir: str | Path | None = None) -> DatabaseDirectory:
        """The task's databases: ``db_dir``, or the packaged ones when ``None``; snapshots go to
        ``snapshot_dir`` (see :class:`DatabaseDirectory`)."""
        return DatabaseDirectory(db_dir if db_dir is not None else self.packaged / "database", snapshot_dir)

    def load_demonstrations(self, path: str | Path | None = None, max_chars: int = MAX_INPUT_CHARS) -> list[dict[str, str]]:
        """Read and validate demonstrations (JSONL with ``question``, ``query``, ``db_id``).

        Args:
            path: the file; ``None`` for the task's packaged 10-shot demonstrations.
            max_chars: the longest ``question`` or ``query`` accepted (characters).

        Returns:
            Rows ``{"question", "query", "db_id"}`` in file order.

        Raises:
            InputError: malformed JSON, a missing, empty or overlong field (naming file and
                line), or an empty file.
        """
        path = Path(path) if path is not None else self.packaged / "10_shot.jsonl"
        demos = []
        for where, record in read_records(path):
            check_lengths(record, ("question", "query", "db_id"), max_chars, where)
            validate_record(record, self.demonstration_schema, where)
            demos.append({k: record[k] for k in ("question", "query", "db_id")})
        if not demos:
            raise InputError(f"{path}: no demonstrations; expected JSON lines with question, query, db_id")
        return demos

    def iter_questions(self, path: str | Path, databases: DatabaseDirectory,
                       max_chars: int = MAX_INPUT_CHARS) -> Iterator[dict[str, str]]:
        """Read questions to answer (``--questions``), one at a time (a file of any size): JSONL
        or a JSON array such as Spider's ``dev.json``, with at least ``question`` and ``db_id``
        per row.

        Args:
            max_chars: the longest ``question`` accepted (characters).

        Yields:
            ``{"question", "db_id"}`` per row, in file order.

        Raises:
            InputError: malformed JSON, a missing or overlong field, or a ``db_id`` with no
                usable database in ``databases`` (naming the file and line).
        """
        for where, record in read_records(path):
            check_lengths(record, ("question", "db_id"), max_chars, where)
            validate_record(record, self.question_schema, where)
            databases.check(record["db_id"], where)
            yield {"question": record["question"].strip(), "db_id": record["db_id"]}

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

    def _fit(self, render: Callable[[int, int], str], num_demos: int, count_tokens: Callable[[str], int],
             max_tokens: int | None, what: str) -> str:
        """Render with as many demonstrations and example rows as fit the token budget (the
        smaller of :attr:`prompt_token_budget` and ``max_tokens``): drop demonstrations from the
        end (keeping one), then example rows (3 -> 1 -> 0). A prompt still over the budget is
        sent whole, unless it is over ``max_tokens`` (the model's limit).

        Raises:
            InputError: the smallest prompt (one demonstration, no example rows) is over
                ``max_tokens``; the message names ``what``.
        """
        budget = self.prompt_token_budget if max_tokens is None else min(self.prompt_token_budget, max_tokens)
        demos, rows = num_demos, 3
        while True:
            prompt = render(demos, rows)
            tokens = count_tokens(prompt)
            if tokens <= budget:
                return prompt
            if demos > 1:
                demos -= 1
            elif rows > 0:
                rows = 1 if rows > 1 else 0
            elif max_tokens is not None and tokens > max_tokens:
                raise InputError(
                    f"{what} does not fit the model: about {tokens} tokens with one demonstration and no example "
                    f"rows, and the model takes at most {max_tokens} (its context minus the tokens to generate); "
                    "shorten the input, or use a model with a longer context"
                )
            else:
                return prompt  # the schema alone is over the soft budget: send it whole

    def question_prompt(
        self,
        database: Database,
        demonstrations: Sequence[dict[str, str]],
        rng: random.Random,
        count_tokens: Callable[[str], int],
        max_tokens: int | None = None,
    ) -> str:
        """The question-generation prompt for ``database``: schema with random example rows and
        the demonstrations' questions in an order shuffled by ``rng`` (demonstrations on the same
        database first), fitted to ``max_tokens`` (the model's limit, when known).

        Raises:
            InputError: the prompt cannot fit ``max_tokens``."""
        demos = list(demonstrations)
        rng.shuffle(demos)
        demos.sort(key=lambda d: d["db_id"] != database.db_id)
        row_seed = rng.random()

        def render(num_demos: int, num_rows: int) -> str:
            picker = random.Random(row_seed)
            tables = self._tables(database, lambda t, k: database.random_rows(t, k, picker), num_rows)
            return prompts.render(
                self.question_template,
                instruction=self.instruction,
                tables=tables,
                demonstrations=demos[:num_demos],
            ).rstrip("\n")  # the model continues the last "-- Question:" line

        what = f"the question-generation prompt for database {database.db_id!r}"
        return self._fit(render, len(demos), count_tokens, max_tokens, what)

    def answer_prompt(
        self,
        database: Database,
        question: str,
        demonstrations: Sequence[dict[str, str]],
        count_tokens: Callable[[str], int],
        max_tokens: int | None = None,
    ) -> str:
        """The answer-generation prompt: schema with rows whose values match ``question``, the
        demonstrations (same database first, queries on one line) and the question, fitted to
        ``max_tokens`` (the model's limit, when known).

        Raises:
            InputError: the prompt cannot fit ``max_tokens``."""
        demos = sorted(demonstrations, key=lambda d: d["db_id"] != database.db_id)
        demos = [{"question": d["question"], "query": one_line(d["query"])} for d in demos]

        def render(num_demos: int, num_rows: int) -> str:
            tables = self._tables(database, lambda t, k: database.matching_rows(t, question, k), num_rows)
            return prompts.render(
                self.answer_template,
                instruction=self.instruction,
                tables=tables,
                demonstrations=demos[:num_demos],
                question=question,
            )

        shown = question if len(question) <= 60 else question[:57] + "..."
        what = f"the answer-generation prompt for database {database.db_id!r} and question {shown!r}"
        return self._fit(render, len(demos), count_tokens, max_tokens, what)

    # --- post-processing -----------------------------------------------------------------------

    def parse_question(self, text: str) -> str | None:
        """Extract a generated question: its first non-empty line, without numbering or a
        ``Question:`` prefix; ``None`` unless MIN_WORDS < words < MAX_WORDS (SymGen's filter)."""
        for line in text.splitlines():
            line = _PREFIX.sub("", line).strip().strip('"').strip()
            if line:
                break
        else:
            return None
        words = len(line.split())
        if not MIN_WORDS < words < MAX_WORDS:
            return None
        return line

    def parse_program(self, text: str) -> str | None:
        """Extract the SQL program from a completion: the first statement, from a code fence if
        there is one; ``None`` unless it starts with ``SELECT`` or ``WITH``."""
        fenced = _FENCE.search(text)
        if fenced:
            text = fenced.group(1)
        for stop in self.sampling.answer_stop:
            text = text.split(stop)[0] if stop.strip() else text
        text = text.split("\n\n")[0].strip()
        text = re.sub(r"^\s*(?:sql|sqlite)\s*:\s*", "", text, flags=re.I)
        statements = [s.strip() for s in sqlparse.split(text) if s.strip()]
        if not statements:
            return None
        program = statements[0].rstrip(";").strip()
        return program if _PROGRAM_START.match(program) else None
