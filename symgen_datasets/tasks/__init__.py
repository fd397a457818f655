"""Tasks: one small declarative unit per symbolic language and dataset, in a registry.

A task knows its demonstrations, its task knowledge (databases), its prompts and how to read a
program out of raw LLM text. ``get_task(name)`` looks one up.
"""

from __future__ import annotations

from ..errors import InputError
from .databases import Database, DatabaseDirectory, Table
from .text_to_sql import TextToSQLTask

TASKS: dict[str, TextToSQLTask] = {
    task.name: task
    for task in (
        TextToSQLTask(
            name="spider",
            instruction="SQLite database of the Spider benchmark.",
            data_dir="spider",
            pretty_name="Spider (synthetic, SymGen)",
            license="cc-by-sa-4.0",
            source_datasets=("xlangai/spider",),
        ),
        TextToSQLTask(
            name="geoquery_sql",
            instruction="SQLite database of US geography (GeoQuery): states, cities, rivers, lakes, mountains, borders.",
            data_dir="geoquery_sql",
            pretty_name="GeoQuery-SQL (synthetic, SymGen)",
            license="apache-2.0",
            source_datasets=("HKUNLP/SymGen geoquery_sql",),
        ),
    )
}


def get_task(name: str) -> TextToSQLTask:
    """The registered task called ``name``.

    Raises:
        InputError: unknown task (the message lists the known ones).
    """
    try:
        return TASKS[name]
    except KeyError:
        raise InputError(f"unknown task {name!r}; known tasks: {', '.join(sorted(TASKS))}") from None


__all__ = ["TASKS", "Database", "DatabaseDirectory", "Table", "TextToSQLTask", "get_task"]
