"""The datasets builders: generation settings in a BuilderConfig, Arrow cache keyed by every input."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import pytest

from symgen_datasets.builders import GeoquerySqlSynth, SpiderSynth
from tests.llm_servers import LLMServer

PACKAGED_DEMOS = Path(__file__).resolve().parent.parent / "symgen_datasets" / "tasks" / "data" / "geoquery_sql" / "10_shot.jsonl"


@pytest.fixture()
def server(oracle):
    with LLMServer(oracle) as running:
        yield running


def build(server, cache_dir, **overrides) -> tuple[GeoquerySqlSynth, datasets.Dataset, int]:
    """Build and load; return the builder, the train split and the LLM requests it made."""
    before = server.requests
    options = dict(generator=f"tgi:{server.url}", num_questions=5, num_samples=4, min_votes=2, seed=3)
    builder = GeoquerySqlSynth(cache_dir=str(cache_dir), **{**options, **overrides})
    builder.download_and_prepare()
    return builder, builder.as_dataset(split="train"), server.requests - before


def test_unchanged_config_is_never_regenerated(server, tmp_path):
    first_builder, first, first_calls = build(server, tmp_path)
    assert first_calls > 0 and len(first) > 0
    assert first.features == datasets.Features(first_builder.info.features)
    second_builder, second, second_calls = build(server, tmp_path)
    assert second_calls == 0  # served from the Arrow cache: no LLM call
    assert second.to_list() == first.to_list()
    assert second_builder.cache_dir == first_builder.cache_dir
    assert "1.0.0" in first_builder.cache_dir  # the config's datasets.Version is in the cache path
    assert (tmp_path / "symgen_work" / first_builder.config_id / "responses.sqlite").is_file()  # not in the current folder


def test_a_changed_setting_is_never_served_stale(server, tmp_path):
    first_builder, first, _ = build(server, tmp_path)
    changed_builder, changed, calls = build(server, tmp_path, seed=4)
    assert calls > 0 and changed_builder.cache_dir != first_builder.cache_dir
    versioned, _, _ = build(server, tmp_path, version="1.1.0")
    assert "1.1.0" in versioned.cache_dir and versioned.config.version == datasets.Version("1.1.0")


def test_changed_demonstrations_in_the_same_file_regenerate(server, tmp_path):
    demos = tmp_path / "demos.jsonl"
    demos.write_text(PACKAGED_DEMOS.read_text())
    first_builder, _, _ = build(server, tmp_path / "cache", demos=str(demos))
    rows = [json.loads(line) for line in demos.read_text().splitlines()]
    demos.write_text("\n".join(json.dumps(r) for r in rows[:5]) + "\n")  # same path, new content
    second_builder, _, calls = build(server, tmp_path / "cache", demos=str(demos))
    assert calls > 0 and second_builder.cache_dir != first_builder.cache_dir


def test_spider_builder_config_carries_the_task():
    builder = SpiderSynth(generator="tgi:http://127.0.0.1:9", num_questions=3)
    assert builder.config.task == "spider" and builder.config.settings().num_questions == 3
    assert builder.info.license == "cc-by-sa-4.0"


def test_cli_and_builder_config_defaults_come_from_the_settings():
    """One source for the generation settings: the defaults `symgen generate` parses and the
    BuilderConfig's fields both equal GenerateSettings' (a drifted default would change the data)."""
    from dataclasses import fields

    from symgen_datasets.cli import _parser
    from symgen_datasets.pipeline import GenerateSettings
    from symgen_datasets.pipeline.settings import command_line_fields
    from symgen_datasets.tasks import get_task

    defaults = {f.name: f.default for f in fields(GenerateSettings) if f.name not in ("task", "task_options")}
    parsed = vars(_parser(get_task("spider")).parse_args(["generate", "spider"]))
    assert {f.name for f in command_line_fields()} == set(defaults)
    for name, default in defaults.items():
        assert parsed[name] == default, name
    assert parsed["task_option_db_dir"] is None  # the task's own option
    config = {f.name: f.default for f in fields(SpiderSynth.BUILDER_CONFIG_CLASS)}
    shaping = {"demos", "questions", "num_questions", "num_samples", "min_votes", "temperature", "seed", "concurrency",
               "generator", "timeout_s", "max_retries", "request_timeout_s", "max_input_chars"}
    assert shaping <= set(config) and not {"output", "overwrite", "work_dir", "max_requests", "cache"} & set(config)
    for name in shaping:
        assert config[name] == defaults[name], name
    assert config["task"] == "spider" and config["db_dir"] is None
