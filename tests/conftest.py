"""Shared fixtures: real databases and dev questions, loopback LLM servers."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"
sys.path.insert(0, str(ROOT))  # tests.llm_servers is test infrastructure, importable by benchmarks too

from symgen_datasets.tasks import get_task  # noqa: E402


@pytest.fixture(scope="session")
def geoquery_dev() -> list[dict]:
    """The 280 GeoQuery-SQL dev questions with gold SQL."""
    return [json.loads(line) for line in (get_task("geoquery_sql").references_path()).read_text().splitlines()]


@pytest.fixture(scope="session")
def geography_db() -> Path:
    """The real GeoQuery SQLite database packaged with the geoquery_sql task."""
    return get_task("geoquery_sql").databases().source_path("geography_db")


@pytest.fixture(scope="session")
def spider_dev_packaged() -> Path:
    return get_task("spider").references_path()


@pytest.fixture()
def oracle(geoquery_dev):
    """A responder right half of the time on GeoQuery-SQL dev questions."""
    from tests.llm_servers import OracleResponder

    gold = {row["question"].strip(): row["query"] for row in geoquery_dev}
    return OracleResponder(gold, accuracy=0.5, questions=[row["question"] for row in geoquery_dev[:50]])
