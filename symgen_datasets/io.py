"""Reading JSON Lines (and JSON arrays) with errors that name the file and line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

import jsonschema

from .errors import InputError


def read_records(path: str | Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """Yield ``(location, record)`` for each object in a JSON Lines file or a JSON array file.

    Args:
        path: a ``.jsonl`` file (one JSON object per line; blank lines are skipped) or a file
            whose first non-blank character is ``[`` (a JSON array of objects, e.g. Spider's
            ``dev.json``).

    Yields:
        ``("FILE line N", record)`` for JSON Lines, ``("FILE item N", record)`` for an array
        (N is 1-based), so that later validation errors can name the place.

    Raises:
        InputError: the file is missing or unreadable, a line is not valid JSON, or a record
            is not a JSON object.
    """
    path = Path(path)
    try:
        with path.open(encoding="utf-8") as handle:
            first = ""
            while not first.strip() and (chunk := handle.read(4096)):
                first += chunk
            handle.seek(0)
            if first.lstrip().startswith("["):
                yield from _array_records(path, handle.read())
                return
            for lineno, line in enumerate(handle, start=1):  # one line at a time: any size
                if line.strip():
                    yield f"{path} line {lineno}", _line_record(path, lineno, line)
    except FileNotFoundError:
        raise InputError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(f"{path}: cannot read the file ({error})") from None


def _array_records(path: Path, text: str) -> Iterator[tuple[str, dict[str, Any]]]:
    try:
        items = json.loads(text)
    except json.JSONDecodeError as error:
        raise InputError(
            f"{path} line {error.lineno}: invalid JSON ({error.msg}); "
            "expected a JSON array of objects or one JSON object per line"
        ) from None
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
        raise InputError(f"{where}: field {field}: {error.message}")
