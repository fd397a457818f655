"""Reading JSON Lines (and JSON arrays) with errors that name the file and line."""

from __future__ import annotations

import codecs
import gzip
import json
from pathlib import Path
from typing import Any, Iterable, Iterator

import jsonschema

from .errors import InputError

#: Default limit on the length of one input text field (characters), ``--max-input-chars``. The
#: longest question or program in SymGen's seed and dev files is under 600 characters; a field
#: far longer is a mistake (a pasted file, a broken export) that would stall prompt building and
#: could never fit a model's context.
MAX_INPUT_CHARS = 4000


def read_records(path: str | Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """Yield ``(location, record)`` for each object in a JSON Lines file or a JSON array file.

    Args:
        path: a ``.jsonl`` file (one JSON object per line; blank lines are skipped) or a file
            whose first non-blank character is ``[`` (a JSON array of objects, e.g. Spider's
            ``dev.json``). UTF-8, with or without a byte order mark; gzip-compressed when its
            name ends with ``.gz`` (e.g. HumanEval's ``HumanEval.jsonl.gz``).

    Yields:
        ``("FILE line N", record)`` for JSON Lines, ``("FILE item N", record)`` for an array
        (N is 1-based), so that later validation errors can name the place.

    Raises:
        InputError: the file is missing or unreadable, a line is not UTF-8 or not valid JSON
            (naming the line), or a record is not a JSON object.
    """
    path = Path(path)
    try:
        with (gzip.open(path, "rb") if path.suffix == ".gz" else path.open("rb")) as handle:
            first = b""
            while not first.strip() and (chunk := handle.read(4096)):
                first += chunk
            handle.seek(0)
            if first.removeprefix(codecs.BOM_UTF8).lstrip().startswith(b"["):
                yield from _array_records(path, handle.read())
                return
            for lineno, raw in enumerate(handle, start=1):  # one line at a time: any size
                line = _decode(path, lineno, raw.removeprefix(codecs.BOM_UTF8) if lineno == 1 else raw)
                if line.strip():
                    yield f"{path} line {lineno}", _line_record(path, lineno, line)
    except FileNotFoundError:
        raise InputError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a folder; expected a JSON Lines file") from None
    except (OSError, EOFError) as error:  # gzip raises BadGzipFile (an OSError) and EOFError
        raise InputError(f"{path}: cannot read the file ({getattr(error, 'strerror', None) or error})") from None


def _decode(path: Path, lineno: int, raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise _not_utf8(path, lineno, raw[error.start], error.start + 1) from None


def _not_utf8(path: Path, lineno: int, byte: int, column: int) -> InputError:
    return InputError(
        f"{path} line {lineno}: not valid UTF-8 (byte 0x{byte:02x} at byte {column} of the line); save the file as UTF-8"
    )


def _array_records(path: Path, data: bytes) -> Iterator[tuple[str, dict[str, Any]]]:
    data = data.removeprefix(codecs.BOM_UTF8)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        lineno = data.count(b"\n", 0, error.start) + 1
        column = error.start - data.rfind(b"\n", 0, error.start)
        raise _not_utf8(path, lineno, data[error.start], column) from None
    try:
        items = json.loads(text)
    except json.JSONDecodeError as error:
        raise InputError(
            f"{path} line {error.lineno}: invalid JSON ({error.msg}); "
            "expected a JSON array of objects or one JSON object per line"
        ) from None
    if not isinstance(items, list):
        raise InputError(f"{path}: expected a JSON array of objects or one JSON object per line")
    for index, item in enumerate(items, start=1):
        where = f"{path} item {index}"
        if not isinstance(item, dict):
            raise InputError(f"{where}: expected a JSON object, got {type(item).__name__}")
        yield where, item


def _line_record(path: Path, lineno: int, line: str) -> dict[str, Any]:
    where = f"{path} line {lineno}"
    try:
        item = json.loads(line)
    except json.JSONDecodeError as error:
        raise InputError(
            f"{where}: invalid JSON ({error.msg} at column {error.colno}); each line must hold one JSON object"
        ) from None
    if not isinstance(item, dict):
        raise InputError(f"{where}: expected a JSON object, got {type(item).__name__}")
    return item


def check_lengths(record: dict[str, Any], fields: Iterable[str], max_chars: int, where: str) -> None:
    """Refuse a record whose text ``fields`` are longer than ``max_chars`` characters.

    Args:
        record: the record (fields that are missing or not strings are left to the schema).
        fields: the names of the text fields to check.
        max_chars: the limit (``--max-input-chars``).
        where: the file and line, for the message.

    Raises:
        InputError: naming ``where``, the field, its length and the limit, and the flag that
            raises it.
    """
    for name in fields:
        value = record.get(name)
        if isinstance(value, str) and len(value) > max_chars:
            raise InputError(
                f"{where}: field {name} is {len(value)} characters long, over the limit of {max_chars}; "
                "shorten it, or raise the limit with --max-input-chars"
            )


_VALIDATORS: dict[str, jsonschema.Draft202012Validator] = {}


def validate_record(record: dict[str, Any], schema: dict[str, Any], where: str) -> None:
    """Validate one record against a JSON Schema.

    Raises:
        InputError: naming ``where`` (file and line), the field and what is wrong with it.
    """
    key = json.dumps(schema, sort_keys=True)
    validator = _VALIDATORS.get(key)
    if validator is None:
        validator = _VALIDATORS[key] = jsonschema.Draft202012Validator(schema)
    error = jsonschema.exceptions.best_match(validator.iter_errors(record))
    if error is not None:
        field = ".".join(str(p) for p in error.absolute_path) or "(record)"
        message = error.message if len(error.message) <= 300 else error.message[:300] + "..."
        raise InputError(f"{where}: field {field}: {message}")
