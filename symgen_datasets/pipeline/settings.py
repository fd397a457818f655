"""The settings of a generation run: ONE source for their names, defaults and help.

:class:`GenerateSettings` declares every setting once, with its command-line flag and help in the
field's metadata. ``symgen generate``'s flags (:func:`add_setting_arguments`) and the builders'
``BuilderConfig`` fields (:func:`builder_fields`) are derived from it, so a default can only be
changed here. A task's own options (text-to-SQL's ``--db-dir``) live in ``task_options``.
"""

from __future__ import annotations

import argparse
from dataclasses import MISSING, Field, dataclass, field, fields
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..generators import REQUEST_TIMEOUT_S
from ..io import MAX_INPUT_CHARS


def setting(default: Any, help: str, flag: str | None = None, metavar: str | None = None, builder: bool = True,
            action: str | None = None, choices: tuple | None = None) -> Any:
    """A settings field: its default and, in its metadata, how it appears on the command line.

    Args:
        default: the default value (the only place it is written).
        help: the flag's help; ``{default}`` is replaced by the default.
        flag: the command-line flag (default: ``--`` + the name with dashes).
        metavar: the flag's value name.
        builder: whether the builders' ``BuilderConfig`` has this field (settings about where a
            run writes, or how it stops, do not shape the data and are left out).
        action: an ``argparse`` action (``store_true``, ``store_false``).
        choices: the values the flag accepts, when they are few.

    ``default`` may be :data:`dataclasses.MISSING`: a required field (a required flag).
    """
    metadata = {"help": help, "flag": flag, "metavar": metavar, "builder": builder, "action": action, "choices": choices}
    return field(metadata=metadata) if default is MISSING else field(default=default, metadata=metadata)


@dataclass
class GenerateSettings:
    """The settings of one ``symgen generate`` run (the CLI options, same names; see each field's
    help in ``symgen generate --help``).

    Attributes:
        task: registered task name.
        task_options: the task's own options (e.g. ``{"db_dir": ...}`` for text-to-SQL).
    """

    task: str = field(default="", metadata={"help": "task name (see `symgen tasks`)"})
    demos: str | None = setting(None, "JSONL demonstrations with the task's fields; default: the task's packaged 10-shot demos",
                                metavar="FILE")
    questions: str | None = setting(None, "JSONL (or JSON array) with the task's question fields: skip question generation",
                                    metavar="FILE")
    num_questions: int | None = setting(None, "questions to generate (default: the task's, 20 for most)", metavar="N")
    num_samples: int = setting(20, "candidates per question (default: {default})", metavar="K")
    min_votes: int = setting(5, "votes needed to keep a question (default: {default})", metavar="V")
    sampling: str = setting("exact", "how many candidates each question gets: fixed (K, one request per candidate: "
                            "SymGen's procedure), all (K, one request with n > 1 where the server takes it), exact "
                            "(rounds that stop once more candidates cannot change the outcome) or adaptive (exact, plus "
                            "a statistical stop at --confidence) (default: {default})", metavar="MODE")
    confidence: float = setting(0.95, "--sampling adaptive: stop when the outcome holds with this probability "
                                "(default: {default})")
    temperature: float = setting(0.8, "sampling temperature (default: {default})")
    seed: int = setting(0, "run seed; request seeds derive from it (default: {default})")
    concurrency: int = setting(16, "LLM requests in flight at most (default: {default})")
    generator: str = setting("embedded", "{spec_help} (default: {default})", metavar="SPEC")
    timeout_s: float = setting(5.0, "time limit of one candidate's verification in seconds (default: {default:g})",
                               flag="--timeout", metavar="S")
    max_retries: int = setting(6, "attempts per LLM request on 429/5xx/connection errors and timeouts (default: {default})")
    request_timeout_s: float = setting(REQUEST_TIMEOUT_S, "time limit of one attempt of an LLM request in seconds "
                                       "(default: {default:g})", flag="--request-timeout", metavar="S")
    max_input_chars: int = setting(MAX_INPUT_CHARS, "longest field accepted in --demos and --questions, in characters "
                                   "(default: {default})", metavar="N")
    output: str | None = setting(None, "dataset folder to write (default: ./<task>-synth)", metavar="DIR", builder=False)
    overwrite: bool = setting(False, "replace an existing non-empty --output folder", builder=False, action="store_true")
    work_dir: str | None = setting(None, "the run's work folder (response cache; default: .<output>.work beside --output)",
                                   metavar="DIR", builder=False)
    max_requests: int | None = setting(None, "request at most N completions from the LLM, then stop cleanly (exit 3); "
                                       "the same command resumes", metavar="N", builder=False)
    cache: bool = setting(True, "do not store responses (no resume)", flag="--no-cache", builder=False, action="store_false")
    max_tokens_billed: int | None = setting(None, "stop cleanly (exit 3) once the requests sent have been billed N tokens "
                                            "(prompt and completion); the same command resumes", metavar="N", builder=False)
    price_per_mtok: str | None = setting(None, "prices per million prompt and completion tokens, e.g. 0.15,0.60: the "
                                         "summary and the card show the bill's cost", metavar="INPUT,OUTPUT", builder=False)
    task_options: dict[str, Any] = field(default_factory=dict, metadata={"help": "the task's own options"})

    def prices(self) -> tuple[float, float] | None:
        """``--price-per-mtok`` as (input, output) per million tokens, or ``None``.

        Raises:
            InputError: not two non-negative numbers separated by a comma.
        """
        if self.price_per_mtok is None:
            return None
        try:
            prices = tuple(float(part) for part in str(self.price_per_mtok).split(","))
        except ValueError:
            prices = ()
        if len(prices) != 2 or min(prices) < 0:
            raise InputError(f"--price-per-mtok {self.price_per_mtok!r}: expected INPUT,OUTPUT prices per million "
                             "tokens, e.g. 0.15,0.60")
        return prices  # type: ignore[return-value]

    def output_folder(self) -> Path:
        """The dataset folder: ``output``, else ``./<task>-synth``."""
        return Path(self.output or f"./{self.task}-synth")

    def work_folder(self) -> Path:
        """Where the response cache lives: ``work_dir``, else ``.<output name>.work`` beside the
        output folder (so the same command finds it again)."""
        if self.work_dir:
            return Path(self.work_dir)
        output = self.output_folder()
        return output.parent / f".{output.name}.work"

    def check(self) -> None:
        """Raise :class:`InputError` naming the option when a value is out of range."""
        if self.num_samples < 1:
            raise InputError(f"--num-samples {self.num_samples}: must be at least 1")
        if not 1 <= self.min_votes <= self.num_samples:
            raise InputError(f"--min-votes {self.min_votes}: must be between 1 and --num-samples ({self.num_samples})")
        if self.num_questions is not None and self.num_questions < 1:
            raise InputError(f"--num-questions {self.num_questions}: must be at least 1")
        from .voting import SAMPLING_MODES

        if self.sampling not in SAMPLING_MODES:
            raise InputError(f"--sampling {self.sampling!r}: expected one of {', '.join(SAMPLING_MODES)}")
        if not 0.5 < self.confidence < 1:
            raise InputError(f"--confidence {self.confidence}: must be between 0.5 and 1 (exclusive), e.g. 0.95")
        if self.temperature < 0:
            raise InputError(f"--temperature {self.temperature}: must be >= 0")
        if self.concurrency < 1:
            raise InputError(f"--concurrency {self.concurrency}: must be at least 1")
        if self.timeout_s <= 0:
            raise InputError(f"--timeout {self.timeout_s}: must be > 0")
        if self.max_retries < 1:
            raise InputError(f"--max-retries {self.max_retries}: must be at least 1 (the number of attempts per request)")
        if self.request_timeout_s <= 0:
            raise InputError(f"--request-timeout {self.request_timeout_s}: must be > 0")
        if self.max_input_chars < 1:
            raise InputError(f"--max-input-chars {self.max_input_chars}: must be at least 1")
        self.prices()
        if self.max_tokens_billed is not None:
            if self.max_tokens_billed < 1:
                raise InputError(f"--max-tokens-billed {self.max_tokens_billed}: must be at least 1")
            if not self.cache:
                raise InputError("--max-tokens-billed needs the response cache: a run stopped at the budget resumes "
                                 "from it; drop --no-cache (or --max-tokens-billed)")
        if self.max_requests is not None:
            if self.max_requests < 1:
                raise InputError(f"--max-requests {self.max_requests}: must be at least 1")
            if not self.cache:
                raise InputError(
                    "--max-requests needs the response cache: a run stopped at the budget resumes from it; "
                    "drop --no-cache (or --max-requests)"
                )


def command_line_fields(cls: type = None) -> list[Field]:
    """The fields of ``cls`` (default :class:`GenerateSettings`) that are command-line flags
    (made with :func:`setting`; ``task`` and ``task_options`` are not)."""
    return [f for f in fields(cls or GenerateSettings) if "flag" in f.metadata]


def flag_of(f: Field) -> str:
    """A setting's command-line flag."""
    return f.metadata["flag"] or "--" + f.name.replace("_", "-")


def add_setting_arguments(parser: argparse.ArgumentParser, spec_help: str, exclude: tuple[str, ...] = ()) -> None:
    """Add one flag per setting to ``parser`` (``dest`` = the setting's name, the default and
    help from :class:`GenerateSettings`), but for the settings named in ``exclude``."""
    add_dataclass_arguments(parser, GenerateSettings, exclude, spec_help=spec_help)


def add_dataclass_arguments(parser: argparse.ArgumentParser, cls: type, exclude: tuple[str, ...] = (),
                            only_given: bool = False, **formats: str) -> None:
    """Add one flag per :func:`setting` field of the dataclass ``cls`` to ``parser``: ``dest`` is
    the field's name, the default and help (``{default}`` and ``formats`` filled in) come from the
    field; a field without a default is a required flag. With ``only_given``, nothing is
    required and absent flags leave no attribute (the flags a user gave, as overrides)."""
    for f in command_line_fields(cls):
        if f.name in exclude:
            continue
        default = None if f.default is MISSING else f.default
        kwargs: dict[str, Any] = {"dest": f.name, "help": f.metadata["help"].format(default=default, **formats)}
        if only_given:
            kwargs["default"] = argparse.SUPPRESS
        elif f.default is MISSING:
            kwargs["required"] = True
        else:
            kwargs["default"] = f.default
        if f.metadata["action"]:
            kwargs["action"] = f.metadata["action"]
        else:
            kwargs["type"] = _value_type(f)
            for name in ("metavar", "choices"):
                if f.metadata.get(name):
                    kwargs[name] = f.metadata[name]
        parser.add_argument(flag_of(f), **kwargs)


def _value_type(f: Field):
    """The type a flag's string is converted to (from the annotation, ``X | None`` -> X)."""
    annotation = str(f.type).replace(" ", "")
    for name, kind in (("int", int), ("float", float)):
        if annotation in (name, f"{name}|None"):
            return kind
    return str


def builder_fields() -> list[tuple[str, Any, Any]]:
    """``(name, type, dataclasses.field)`` of every setting a ``BuilderConfig`` carries, with the
    same defaults (for :func:`dataclasses.make_dataclass`)."""
    out = []
    for f in fields(GenerateSettings):
        if f.metadata.get("builder", f.name == "task") and f.name != "task_options":
            default = f.default if f.default is not MISSING else None
            out.append((f.name, f.type, field(default=default)))
    return out
