"""The Task API: everything the pipeline, the cards, training and evaluation need to know about
one symbolic language and one dataset, in one small declarative unit.

A **family** (one :class:`Task` subclass per language: text-to-SQL, Bash, TOP, QDMR, Python)
declares, as class attributes, its field names (each dataset keeps its source's names), the
verifier it uses, its prompt templates and its options; an **instance** per dataset gives its
name, license, source and packaged demonstrations. Instances are registered under the Python
entry-point group ``symgen_datasets.tasks`` (see :mod:`symgen_datasets.tasks`), so a language can
live in a package of its own.

The pipeline calls only the methods below; nothing outside a task and its verifier knows a field
name. The shape follows lm-evaluation-harness's tasks: one declarative unit in a registry.
"""

from __future__ import annotations

import hashlib
import random
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Iterable, Iterator, Sequence

from .. import prompts
from ..errors import InputError
from ..io import MAX_INPUT_CHARS, check_lengths, read_records, validate_record

if TYPE_CHECKING:
    from ..metrics import Evaluation

#: SymGen's question length filter: keep generated questions with MIN_WORDS < words < MAX_WORDS.
MIN_WORDS, MAX_WORDS = 5, 40

_PREFIX = re.compile(r"^\s*(?:--\s*|#\s*)?(?:\d+[.)]\s*|[-*]\s+)?(?:question\s*\d*\s*[:.]\s*)?", re.I)
_FENCE = re.compile(r"```[\w+-]*\s*\n?(.*?)(?:```|$)", re.S)


def fenced_code(text: str) -> str:
    """The content of the first Markdown code fence in ``text`` (chat models wrap programs in
    them), or ``text`` itself when it has none."""
    fenced = _FENCE.search(text)
    return fenced.group(1) if fenced else text


def parse_task_flags(arguments: Sequence[str]) -> dict[str, str]:
    """Task options given as ``--name value`` or ``--name=value`` (``--db-dir DIR`` ->
    ``{"db_dir": "DIR"}``), for commands that learn the task only after parsing (from a card or
    a model); :meth:`Task.options_with_defaults` then checks and converts them.

    Raises:
        InputError: anything that is not ``--name value``.
    """
    options = {}
    items = list(arguments)
    while items:
        flag = items.pop(0)
        name, equals, value = flag.partition("=")
        if not name.startswith("--") or len(name) < 3:
            raise InputError(f"unexpected argument {flag!r}; task options look like --db-dir DIR")
        if not equals:
            if not items:
                raise InputError(f"{flag}: expects a value")
            value = items.pop(0)
        options[name[2:].replace("-", "_")] = value
    return options


def check_aligned(references: Sequence, predictions: Sequence) -> None:
    """Raise ``ValueError`` unless there is one prediction per reference row."""
    if len(references) != len(predictions):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} reference rows; give one per row, in order")


def question_key(question: str) -> str:
    """Normal form of a question for deduplication: lower case, words only."""
    return " ".join(re.findall(r"\w+", question.lower()))


@dataclass(frozen=True)
class SamplingDefaults:
    """Per-stage generation limits of a task (tokens) and stop sequences."""

    question_max_new_tokens: int = 48
    answer_max_new_tokens: int = 200
    question_stop: tuple[str, ...] = ("\n",)
    answer_stop: tuple[str, ...] = ("\n\n",)


@dataclass(frozen=True)
class TaskOption:
    """An option a task declares for itself, such as text-to-SQL's ``--db-dir``: a flag of
    ``symgen generate``, ``check`` and ``verify``, a field of the task's ``BuilderConfig``, and a
    key of ``GenerateSettings.task_options``.

    Attributes:
        name: the Python name (``db_dir``); the flag is ``--db-dir``.
        help: the flag's help text.
        default: the value when the option is not given.
        type: converts the command-line string.
        metavar: shown in ``--help``.
    """

    name: str
    help: str
    default: Any = None
    type: Callable[[str], Any] = str
    metavar: str | None = None

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


class TaskKnowledge:
    """What a task knows besides its demonstrations (databases, label inventories), loaded once
    per run by :meth:`Task.load_knowledge`. The base class knows nothing.

    The pipeline calls :meth:`check_record` for every input row, :meth:`prepare` once before the
    first request (with the contexts the run uses), and :meth:`cleanup` when the run ends.
    """

    def check_record(self, record: dict, where: str) -> None:
        """Refuse an input row whose context this knowledge cannot serve (e.g. an unknown
        ``db_id``), with :class:`InputError` naming ``where``."""

    def prepare(self, contexts: Iterable[dict]) -> None:
        """Get ready to serve ``contexts`` (the context fields of the run's questions)."""

    def cleanup(self) -> None:
        """Release what :meth:`prepare` made."""

    def fingerprint(self, digest: "hashlib._Hash") -> None:
        """Feed the knowledge's content to ``digest`` (for caches keyed by every input)."""


@dataclass(frozen=True)
class Task:
    """A symbolic language (the subclass) and a dataset (the instance).

    Instance attributes:
        name: the task's name on the command line and in the registry.
        pretty_name: the dataset card's title.
        description: one line for ``symgen tasks``.
        license: the license of the source data, inherited by generated datasets.
        source_datasets: where the source data comes from (cards' ``source_datasets``).
        data_dir: the packaged folder (under ``<data_package>/data/``) holding
            ``10_shot.jsonl`` (the default demonstrations) and the task's knowledge.
        data_package: the package that holds ``data/<data_dir>`` (a plugin's own).
        instruction: the first line of every prompt.
        default_num_questions: ``--num-questions`` when not given (small: the embedded model
            is slow).
        prompt_token_budget: prompts are fitted to this many tokens (or fewer when the model's
            context is shorter).
        sampling: token limits and stop sequences per stage.
        dev_file: the packaged real dev set (in :attr:`packaged`), the default references of
            evaluation; ``None`` when the task ships none.

    Class attributes (the family's declarations):
        family: the language family (``text-to-sql``, ``nl2bash``...).
        question_field, answer_field: the source's names of the question and the program.
        context_fields: other fields a question carries (``db_id`` for SQL).
        field_descriptions: what each field holds (JSON Schema descriptions, card tables).
        extra_row_fields: fields a kept row adds besides the question, answer and context
            (name -> description), filled by :meth:`row_extras`.
        auxiliary_fields: list-of-string columns that answer generation adds to each question
            besides the candidates (e.g. generated test inputs), filled by
            :meth:`auxiliary_request` and :meth:`parse_auxiliary`.
        tags, task_categories: the dataset card's Hub metadata.
        question_template, answer_template: Jinja2 templates in ``<template_package>/prompts``.
        options: the options the task declares (:class:`TaskOption`).
        filter_question_length: apply SymGen's question length filter to generated questions.
        verifier_class: the class of the task's verifier (:meth:`make_verifier` builds one).
        primary_metric: the name of the main metric of :meth:`evaluate` (what training keeps
            the best checkpoint by and S3 tracks).
        reference_fields: fields a reference row needs besides :attr:`demonstration_fields`
            for :meth:`evaluate` (e.g. a problem's own tests).
        model_type: the task model: ``generation`` (a causal or seq2seq LM writes
            :meth:`training_target`) or ``classification`` (an encoder with a classification
            head picks the label; the task then has ``labels`` and ``classification_inputs``).
        synthesis: how new data is made: ``symgen`` (questions, candidate answers, the
            verifier's vote) or ``label-conditioned`` (ZeroGen: the LLM writes complete rows for
            a label it is given; no verifier).
        extrapolation_template: the template of S3's error-extrapolation prompt
            (:meth:`extrapolation_prompt`).
    """

    name: str
    pretty_name: str
    description: str
    license: str
    source_datasets: tuple[str, ...]
    data_dir: str
    instruction: str = ""
    data_package: str = "symgen_datasets.tasks"
    default_num_questions: int = 20
    prompt_token_budget: int = 1536
    sampling: SamplingDefaults = field(default_factory=SamplingDefaults)
    dev_file: str | None = "dev.jsonl"

    family: ClassVar[str] = ""
    question_field: ClassVar[str] = "question"
    answer_field: ClassVar[str] = "answer"
    context_fields: ClassVar[tuple[str, ...]] = ()
    field_descriptions: ClassVar[dict[str, str]] = {}
    extra_row_fields: ClassVar[dict[str, str]] = {}
    auxiliary_fields: ClassVar[dict[str, str]] = {}
    tags: ClassVar[tuple[str, ...]] = ()
    task_categories: ClassVar[tuple[str, ...]] = ("text-generation",)
    question_template: ClassVar[str] = ""
    answer_template: ClassVar[str] = ""
    template_package: ClassVar[str] = "symgen_datasets"
    options: ClassVar[tuple[TaskOption, ...]] = ()
    filter_question_length: ClassVar[bool] = True
    #: A generated "question" matching this is the task's program, not a question, and is
    #: dropped (an LLM answering an extrapolation prompt with SQL, say); ``None``: no such check.
    program_pattern: ClassVar[re.Pattern | None] = None
    verifier_class: ClassVar[type | None] = None
    primary_metric: ClassVar[str] = "exact_match"
    reference_fields: ClassVar[tuple[str, ...]] = ()
    model_type: ClassVar[str] = "generation"
    synthesis: ClassVar[str] = "symgen"
    extrapolation_template: ClassVar[str] = ""

    # --- fields, schemas, packaged data --------------------------------------------------------

    @property
    def packaged(self) -> Path:
        """The task's packaged data folder."""
        return Path(str(resources.files(self.data_package).joinpath("data", self.data_dir)))

    @property
    def question_fields(self) -> tuple[str, ...]:
        """The fields of a question: the question and its context."""
        return (self.question_field, *self.context_fields)

    @property
    def demonstration_fields(self) -> tuple[str, ...]:
        """The fields of a demonstration: the question, the program and the context."""
        return (self.question_field, self.answer_field, *self.context_fields)

    def describe_field(self, name: str) -> str:
        return self.field_descriptions.get(name, "")

    def _object_schema(self, title: str, fields: Sequence[str], description: str) -> dict:
        return {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "title": title,
            "description": description,
            "type": "object",
            "required": list(fields),
            "properties": {
                name: {"type": "string", "minLength": 1, "description": self.describe_field(name)} for name in fields
            },
        }

    @property
    def demonstration_schema(self) -> dict:
        """JSON Schema of a demonstration (other fields are allowed and ignored)."""
        return self._object_schema(f"{self.name} demonstration", self.demonstration_fields,
                                   f"One in-context example of {self.name} (the source's field names).")

    @property
    def question_schema(self) -> dict:
        """JSON Schema of a question to answer (``--questions``)."""
        return self._object_schema(f"{self.name} question", self.question_fields,
                                   f"A question of {self.name} to answer; other fields are ignored.")

    def options_with_defaults(self, given: dict[str, Any] | None) -> dict[str, Any]:
        """``given`` task options completed with the declared defaults.

        Raises:
            InputError: an option the task does not declare.
        """
        given = dict(given or {})
        declared = {option.name: option for option in self.options}
        unknown = sorted(set(given) - set(declared))
        if unknown:
            known = ", ".join(option.flag for option in self.options) or "none"
            raise InputError(f"task {self.name} has no option {', '.join(unknown)}; its options: {known}")
        values = {}
        for name, option in declared.items():
            value = given.get(name, option.default)
            if isinstance(value, str) and option.type is not str:
                try:
                    value = option.type(value)
                except (TypeError, ValueError) as error:
                    raise InputError(f"{option.flag} {value!r}: {error}") from None
            values[name] = value
        return values

    # --- inputs ----------------------------------------------------------------------------------

    def load_knowledge(self, options: dict[str, Any], snapshot_dir: str | Path | None = None) -> TaskKnowledge:
        """The task's knowledge for a run (``options``: the task's options; ``snapshot_dir``: a
        folder of the run's own the knowledge may write to).

        Raises:
            InputError: the knowledge cannot be loaded (the message names the option or file).
        """
        return TaskKnowledge()

    def load_demonstrations(self, path: str | Path | None = None, max_chars: int = MAX_INPUT_CHARS,
                            knowledge: TaskKnowledge | None = None) -> list[dict[str, str]]:
        """Read and validate demonstrations (JSON Lines or a JSON array with
        :attr:`demonstration_fields`).

        Args:
            path: the file; ``None`` for the task's packaged ``10_shot.jsonl``.
            max_chars: the longest field accepted (characters).
            knowledge: when given, each row's context is checked against it as ``--questions``
                rows are (a ``db_id`` with no database is refused, naming the file and line).

        Returns:
            Rows with :attr:`demonstration_fields` only, in file order.

        Raises:
            InputError: malformed JSON, a missing, empty or overlong field (naming file and
                line), a context the knowledge cannot serve, or an empty file.
        """
        path = Path(path) if path is not None else self.packaged / "10_shot.jsonl"
        demos = []
        for where, record in read_records(path):
            check_lengths(record, self.demonstration_fields, max_chars, where)
            validate_record(record, self.demonstration_schema, where)
            if knowledge is not None:
                knowledge.check_record(record, where)
            demos.append({name: record[name] for name in self.demonstration_fields})
        if not demos:
            raise InputError(f"{path}: no demonstrations; expected JSON lines with {', '.join(self.demonstration_fields)}")
        return demos

    def iter_questions(self, path: str | Path, knowledge: TaskKnowledge,
                       max_chars: int = MAX_INPUT_CHARS) -> Iterator[dict[str, str]]:
        """Read questions to answer (``--questions``), one at a time (a file of any size): JSON
        Lines or a JSON array (such as a dataset's ``dev.json``) with at least
        :attr:`question_fields` per row.

        Yields:
            Rows with :attr:`question_fields` (the question stripped), in file order.

        Raises:
            InputError: malformed JSON, a missing or overlong field, or a context the knowledge
                cannot serve (naming the file and line).
        """
        for where, record in read_records(path):
            check_lengths(record, self.question_fields, max_chars, where)
            validate_record(record, self.question_schema, where)
            knowledge.check_record(record, where)
            yield {self.question_field: self.normalize_question(record[self.question_field]),
                   **{name: record[name] for name in self.context_fields}}

    def normalize_question(self, text: str) -> str:
        """A given question as the run uses it: stripped of surrounding white space."""
        return text.strip()

    def question_contexts(self, knowledge: TaskKnowledge) -> list[dict[str, str]]:
        """The contexts question generation goes round: one per database for SQL; one empty
        context by default."""
        return [{}]

    # --- prompts -----------------------------------------------------------------------------

    def render(self, template: str, **context: Any) -> str:
        """Render one of the task's prompt templates."""
        return prompts.render(template, package=self.template_package, **context)

    def prompt_context(self, knowledge: TaskKnowledge, row: dict[str, Any] | None = None) -> dict[str, Any]:
        """What the task's knowledge adds to the prompts' templates (e.g. MTOP's label list), for
        ``row``: the question row of an answer prompt, the context of a question or
        extrapolation prompt (e.g. ``{"db_id": ...}``); nothing by default."""
        return {}

    def _prompt_extras(self, knowledge: TaskKnowledge, row: dict[str, Any] | None) -> dict[str, Any]:
        """:meth:`prompt_context`, also when a task overrides it without the ``row`` argument."""
        import inspect

        if len(inspect.signature(self.prompt_context).parameters) >= 2:
            return self.prompt_context(knowledge, row)
        return self.prompt_context(knowledge)

    def template_hashes(self) -> dict[str, str]:
        """SHA-256 (12 hex digits) of each prompt template, for cards and cache keys."""
        return {name: prompts.template_hash(name, package=self.template_package)
                for name in (self.question_template, self.answer_template) if name}

    def fit_prompt(self, render: Callable[[int, int], str], num_demos: int, count_tokens: Callable[[str], int],
                   max_tokens: int | None, what: str, details: Sequence[int] = (0,)) -> str:
        """Render with as many demonstrations and as much detail as fit the token budget (the
        smaller of :attr:`prompt_token_budget` and ``max_tokens``): ``render(demos, detail)``
        is tried dropping demonstrations from the end (keeping one), then going down
        ``details`` (e.g. example rows 3 -> 1 -> 0). A prompt still over the budget is sent
        whole, unless it is over ``max_tokens`` (the model's limit).

        Raises:
            InputError: the smallest prompt is over ``max_tokens``; the message names ``what``.
        """
        budget = self.prompt_token_budget if max_tokens is None else min(self.prompt_token_budget, max_tokens)
        demos, level = num_demos, 0
        while True:
            prompt = render(demos, details[level])
            tokens = count_tokens(prompt)
            if tokens <= budget:
                return prompt
            if demos > 1:
                demos -= 1
            elif level + 1 < len(details):
                level += 1
            elif max_tokens is not None and tokens > max_tokens:
                raise InputError(
                    f"{what} does not fit the model: about {tokens} tokens with one demonstration"
                    f"{' and the least detail' if len(details) > 1 else ''}, and the model takes at most {max_tokens} "
                    "(its context minus the tokens to generate); shorten the input, or use a model with a longer context"
                )
            else:
                return prompt  # over the soft budget only: send it whole

    def question_prompt(self, context: dict[str, str], knowledge: TaskKnowledge, demonstrations: Sequence[dict],
                        rng: random.Random, count_tokens: Callable[[str], int], max_tokens: int | None = None) -> str:
        """The question-generation prompt for ``context``: the instruction and the
        demonstrations' questions, shuffled by ``rng``, fitted to ``max_tokens``.

        Raises:
            InputError: the prompt cannot fit ``max_tokens``.
        """
        demos = list(demonstrations)
        rng.shuffle(demos)

        extras = self._prompt_extras(knowledge, context)

        def render(num_demos: int, detail: int) -> str:
            return self.render(self.question_template, instruction=self.instruction, task=self,
                               demonstrations=demos[:num_demos], **extras, **context).rstrip("\n")

        return self.fit_prompt(render, len(demos), count_tokens, max_tokens, f"the question-generation prompt of {self.name}")

    def answer_prompt(self, row: dict[str, str], knowledge: TaskKnowledge, demonstrations: Sequence[dict],
                      count_tokens: Callable[[str], int], max_tokens: int | None = None) -> str:
        """The answer-generation prompt for the question ``row``: the instruction, the
        demonstrations and the question, fitted to ``max_tokens``.

        Raises:
            InputError: the prompt cannot fit ``max_tokens``.
        """
        extras = self._prompt_extras(knowledge, row)

        def render(num_demos: int, detail: int) -> str:
            return self.render(self.answer_template, instruction=self.instruction, task=self,
                               demonstrations=list(demonstrations)[:num_demos], question=row[self.question_field],
                               row=row, **extras)

        return self.fit_prompt(render, len(demonstrations), count_tokens, max_tokens, self._prompt_name(row))

    def _prompt_name(self, row: dict[str, str]) -> str:
        question = row[self.question_field]
        shown = question if len(question) <= 60 else question[:57] + "..."
        return f"the answer-generation prompt for question {shown!r}"

    # --- reading LLM output ------------------------------------------------------------------

    def parse_question(self, text: str, context: dict[str, str]) -> dict[str, str] | None:
        """A generated question from a completion: its first non-empty line, without numbering
        or a ``Question:`` prefix, within SymGen's length filter (more than :data:`MIN_WORDS`,
        fewer than :data:`MAX_WORDS` words) when :attr:`filter_question_length`.

        Returns:
            The question row (:attr:`question_fields`, the context's values), or ``None``.
        """
        for line in text.splitlines():
            line = _PREFIX.sub("", line).strip().strip('"').strip()
            if line:
                break
        else:
            return None
        if self.filter_question_length and not MIN_WORDS < len(line.split()) < MAX_WORDS:
            return None
        if not self.looks_like_question(line):
            return None
        return {self.question_field: line, **context}

    def looks_like_question(self, line: str) -> bool:
        """Whether a generated line reads as a natural-language question rather than code: no
        code fence, no statement-ending ``;``, most words made of letters, and not the task's
        :attr:`program_pattern`."""
        if "`" in line or line.rstrip().endswith(";") or "\t" in line:
            return False
        words = line.split()
        if words and sum(any(c.isalpha() for c in w) for w in words) < 0.6 * len(words):
            return False
        return not (self.program_pattern and self.program_pattern.search(line))

    def parse_answer(self, text: str, row: dict[str, str]) -> str | None:
        """The program in a completion: the content of a code fence if there is one, cut at
        the first stop sequence, on one line; ``None`` when empty."""
        text = fenced_code(text)
        for stop in self.sampling.answer_stop:
            if stop.strip():
                text = text.split(stop)[0]
        text = text.split("\n\n")[0]
        program = " ".join(text.split())
        return program or None

    # --- verification ------------------------------------------------------------------------

    def make_verifier(self, knowledge: TaskKnowledge, timeout_s: float = 5.0):
        """The :class:`~symgen_datasets.verifiers.base.Verifier` of this task: by default
        ``verifier_class(knowledge, timeout_s=timeout_s)``.

        Args:
            knowledge: from :meth:`load_knowledge`.
            timeout_s: the time limit of one candidate (seconds), for verifiers that run code.

        Raises:
            InputError: the task has no verifier (e.g. a classification task).
        """
        if self.verifier_class is None:
            raise InputError(f"task {self.name} has no verifier (its rows are {self.synthesis} data); commands that "
                             "run candidates through a verifier (generate, check, verify, calibrate) do not apply to it")
        return self.verifier_class(knowledge, timeout_s=timeout_s)

    def auxiliary_request(self, row: dict[str, str], knowledge: TaskKnowledge,
                          count_tokens: Callable[[str], int], max_tokens: Callable[[int], int | None]) -> tuple | None:
        """An extra request answer generation makes for the question ``row`` besides its
        candidates (e.g. test inputs for code), as ``(prompt, max_new_tokens, stop, samples)``;
        ``None`` (the default) for none. ``max_tokens(max_new_tokens)`` is the model's prompt limit."""
        return None

    def parse_auxiliary(self, row: dict[str, str], texts: list[str]) -> dict[str, list[str]]:
        """The :attr:`auxiliary_fields` of ``row`` from the completions of its auxiliary request."""
        return {}

    def row_extras(self, row: dict, outcome_detail: str | None) -> dict[str, str]:
        """The :attr:`extra_row_fields` of a kept row, from the verified question ``row`` and the
        winning outcome's ``detail``."""
        return {}

    def adapt_demonstrations(self, demonstrations: Sequence[dict], knowledge: TaskKnowledge, verifier) -> list[dict]:
        """The demonstrations as a run on ``knowledge`` uses them (e.g. SQL transpiled to the
        engine's dialect), called once the verifier is ready; unchanged by default."""
        return list(demonstrations)

    def run_row_fields(self, knowledge: TaskKnowledge) -> dict[str, str]:
        """:attr:`extra_row_fields` every kept row of a run shares, from its knowledge (e.g. the
        SQL dialect); none by default."""
        return {}

    # --- training (a task model learns input -> target) --------------------------------------

    def training_input(self, row: dict, knowledge: TaskKnowledge) -> str:
        """The text a task model reads for ``row``: its question by default."""
        return row[self.question_field]

    def training_target(self, row: dict) -> str:
        """The text a task model writes for ``row``: its program."""
        return row[self.answer_field]

    def model_prompt(self, row: dict, knowledge: TaskKnowledge) -> str:
        """What a causal task model reads before it writes :meth:`training_target`:
        :meth:`training_input` and a line naming the answer field (``query:``)."""
        return f"{self.training_input(row, knowledge)}\n{self.answer_field}:\n"

    # --- evaluation (predictions against real references) -------------------------------------

    def references_path(self) -> Path | None:
        """The packaged real dev set (:attr:`dev_file`), or ``None`` when the task ships none."""
        if self.dev_file is None:
            return None
        path = self.packaged / self.dev_file
        return path if path.is_file() else None

    @property
    def reference_schema(self) -> dict:
        """JSON Schema of a reference row (other fields are allowed and ignored)."""
        return self._object_schema(f"{self.name} reference", (*self.demonstration_fields, *self.reference_fields),
                                   f"A real {self.name} example with its gold program, for evaluation.")

    def load_references(self, path: str | Path | None, knowledge: TaskKnowledge,
                        max_chars: int = MAX_INPUT_CHARS) -> list[dict[str, str]]:
        """Read and validate reference rows (JSON Lines or a JSON array such as Spider's
        ``dev.json``) with :attr:`demonstration_fields` and :attr:`reference_fields`.

        Args:
            path: the file; ``None`` for the packaged dev set (:meth:`references_path`).
            knowledge: checks each row's context (e.g. that its ``db_id`` exists).

        Returns:
            Rows with those fields only, in file order.

        Raises:
            InputError: no file given and none packaged; malformed JSON, a missing or overlong
                field, or a context the knowledge cannot serve (naming file and line); no row.
        """
        if path is None:
            path = self.references_path()
            if path is None:
                raise InputError(f"task {self.name} ships no dev set; give the real references with --references FILE")
        fields = (*self.demonstration_fields, *self.reference_fields)
        schema = self.reference_schema
        rows = []
        for where, record in read_records(path):
            check_lengths(record, fields, max(max_chars, 4 * MAX_INPUT_CHARS), where)
            validate_record(record, schema, where)
            knowledge.check_record(record, where)
            rows.append({name: record[name] for name in fields})
        if not rows:
            raise InputError(f"{path}: no reference rows; expected JSON lines with {', '.join(fields)}")
        return rows

    def evaluate(self, references: Sequence[dict], predictions: Sequence[str | None], knowledge: TaskKnowledge,
                 timeout_s: float = 10.0) -> "Evaluation":
        """Score ``predictions`` (programs, one per reference row, in order; ``None`` for no
        prediction, always wrong) against the references' gold programs.

        The base class scores exact match after folding white space; families override it with
        their field's metrics (see :mod:`symgen_datasets.metrics`).

        Args:
            references: rows from :meth:`load_references`.
            predictions: as many as ``references``.
            knowledge: from :meth:`load_knowledge` (databases, sandbox...).
            timeout_s: the time limit of running one prediction, for tasks that execute them.

        Returns:
            An :class:`~symgen_datasets.metrics.Evaluation` whose ``primary`` is
            :attr:`primary_metric`.

        Raises:
            ValueError: ``predictions`` and ``references`` differ in length.
        """
        from ..metrics import Evaluation, share

        check_aligned(references, predictions)
        rows = [{"correct": p is not None and " ".join(p.split()) == " ".join(r[self.answer_field].split())}
                for r, p in zip(references, predictions)]
        return Evaluation({"exact_match": share([r["correct"] for r in rows])}, "exact_match", rows)

    # --- S3: extrapolating a task model's errors (Wang et al., 2023) ---------------------------

    def extrapolation_context(self, error: dict) -> dict[str, Any]:
        """What new examples of ``error`` share with it: its context fields (SQL: its database).
        Errors with the same context are extrapolated together."""
        return {name: error[name] for name in self.context_fields}

    def extrapolation_prompt(self, context: dict, errors: Sequence[dict], knowledge: TaskKnowledge,
                             demonstrations: Sequence[dict], count_tokens: Callable[[str], int],
                             max_tokens: int | None = None) -> str:
        """S3's error-extrapolation prompt: the task's knowledge for ``context`` and the
        ``errors`` (each a reference row with ``prediction``, ``gold_outcome`` and
        ``prediction_outcome``), asking for one new example of the same kind; fitted to
        ``max_tokens`` by dropping errors from the end (keeping one).

        Raises:
            NotImplementedError: the task declares no :attr:`extrapolation_template`.
            InputError: the prompt cannot fit ``max_tokens``.
        """
        if not self.extrapolation_template:
            raise NotImplementedError(f"task {self.name} declares no extrapolation_template")
        extras = self._prompt_extras(knowledge, context)

        def render(num_errors: int, detail: int) -> str:
            return self.render(self.extrapolation_template, instruction=self.instruction, task=self,
                               errors=list(errors)[:num_errors], demonstrations=demonstrations, **extras,
                               **context).rstrip("\n")

        return self.fit_prompt(render, max(1, len(errors)), count_tokens, max_tokens,
                               f"the error-extrapolation prompt of {self.name}")

    def parse_extrapolated(self, text: str, context: dict) -> dict | None:
        """A new example from a completion of :meth:`extrapolation_prompt`: for ``symgen``
        synthesis a question row (:meth:`parse_question`), answered and verified by the
        pipeline afterwards; label-conditioned tasks return a complete row."""
        return self.parse_question(text, context)

    # --- cards -------------------------------------------------------------------------------

    def card_summary(self) -> str:
        """What the generated data is, for the dataset card (one paragraph, Markdown)."""
        return (f"Synthetic {self.pretty_name.split(' (')[0]} data: questions (`{self.question_field}`) and programs "
                f"(`{self.answer_field}`).")
