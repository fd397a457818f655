"""The shared ``datasets`` builder of SymGen datasets; one small module per dataset family
subclasses it (see ``spider_synth.py``, ``nl2bash_synth.py``...).

A builder's config class is made by :func:`builder_config_class` for its task: the generation
settings of ``symgen generate`` (the fields of
:class:`~symgen_datasets.pipeline.settings.GenerateSettings` that shape the data, same names and
defaults), the task's own options (e.g. ``db_dir``) and a ``datasets.Version``.
``download_and_prepare()`` runs the pipeline and ``datasets`` caches the Arrow result under a
config id that covers every input: the settings, the demonstrations' and questions' content, the
task knowledge's content (databases, inventories), the prompt templates and the tool version. An
unchanged config is never regenerated (no LLM call); any change gets a new cache entry.

datasets >= 4 runs no loading scripts: use the builders in-process::

    from symgen_datasets.builders import GeoquerySqlSynth

    builder = GeoquerySqlSynth(generator="tgi:http://localhost:8080", num_questions=500, version="1.1.0")
    builder.download_and_prepare()
    rows = builder.as_dataset(split="train")
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any, Iterable

import datasets

from .. import __version__
from ..pipeline.columns import Columns
from ..pipeline.run import generate
from ..pipeline.settings import GenerateSettings, builder_fields
from ..tasks import Task, get_task

_CITATION = """@inproceedings{ye-etal-2023-generating,
    title = "Generating Data for Symbolic Language with Large Language Models",
    author = "Ye, Jiacheng and Li, Chengzu and Kong, Lingpeng and Yu, Tao",
    booktitle = "Proceedings of the 2023 Conference on Empirical Methods in Natural Language Processing",
    year = "2023",
}"""


def _file_sha256(path: Path, digest: "hashlib._Hash") -> None:
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)


class SymgenBuilderConfig(datasets.BuilderConfig):
    """Base of the configs :func:`builder_config_class` makes: a BuilderConfig = the generation
    settings + the task's options + a ``datasets.Version`` (a string is accepted)."""

    def __post_init__(self):
        if isinstance(self.version, str):
            self.version = datasets.Version(self.version)
        super().__post_init__()

    def task_object(self) -> Task:
        return get_task(self.task)

    def settings(self) -> GenerateSettings:
        """The :class:`GenerateSettings` of this config (no output folder: the builder caches)."""
        task = self.task_object()
        names = {f.name for f in dataclasses.fields(GenerateSettings)}
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name in names}
        options = {option.name: getattr(self, option.name) for option in task.options}
        return GenerateSettings(**values, task_options=options)

    def fingerprint(self) -> str:
        """SHA-256 (16 hex digits) of everything the generated data depends on: the settings, the
        content of the demonstrations, questions and task knowledge, the prompt templates and the
        version of symgen-datasets."""
        task = self.task_object()
        settings = self.settings()
        digest = hashlib.sha256()
        digest.update(json.dumps(dataclasses.asdict(settings), sort_keys=True, default=str).encode())
        digest.update(json.dumps(task.load_demonstrations(settings.demos), sort_keys=True).encode())
        if settings.questions:
            _file_sha256(Path(settings.questions), digest)
        knowledge = task.load_knowledge(task.options_with_defaults(settings.task_options))
        try:
            knowledge.fingerprint(digest)
        finally:
            knowledge.cleanup()  # connections a server's knowledge opened to read its schema
        for template_hash in task.template_hashes().values():
            digest.update(template_hash.encode())
        digest.update(__version__.encode())
        return digest.hexdigest()[:16]

    def create_config_id(self, config_kwargs: dict, custom_features: datasets.Features | None = None) -> str:
        """``<name>-<fingerprint>``: the cache folder changes whenever an input does."""
        return f"{self.name}-{self.fingerprint()}"


def builder_config_class(task_name: str) -> type[SymgenBuilderConfig]:
    """A ``BuilderConfig`` dataclass for the task ``task_name``: the settings that shape the
    data (:func:`~symgen_datasets.pipeline.settings.builder_fields`, same defaults), the task's
    own options, and ``task`` defaulting to ``task_name``."""
    task = get_task(task_name)
    fields: list[tuple[str, Any, Any]] = []
    for name, kind, spec in builder_fields():
        default = task_name if name == "task" else spec.default
        fields.append((name, kind, dataclasses.field(default=default)))
    fields += [(option.name, Any, dataclasses.field(default=option.default)) for option in task.options]
    return dataclasses.make_dataclass(f"{type(task).__name__}BuilderConfig", fields, bases=(SymgenBuilderConfig,))


class SymgenBuilder(datasets.GeneratorBasedBuilder):
    """Generates a verified dataset with the SymGen pipeline; subclasses set
    ``BUILDER_CONFIG_CLASS = builder_config_class(TASK)`` and ``BUILDER_CONFIGS``. The ``train``
    split holds the kept rows (the source's fields + provenance)."""

    BUILDER_CONFIG_CLASS = SymgenBuilderConfig
    config: SymgenBuilderConfig

    def _info(self) -> datasets.DatasetInfo:
        task = self.config.task_object()
        columns = Columns(task, task.verifier_class.outcome_word)
        return datasets.DatasetInfo(
            description=f"{task.pretty_name}: {task.card_summary()}",
            features=columns.rows,
            citation=_CITATION,
            license=task.license,
        )

    def _split_generators(self, dl_manager):
        # the run's work folder (response cache, so an interrupted build resumes) lives in the
        # datasets cache, keyed by the config id, never in the current directory
        settings = self.config.settings()
        settings.work_dir = str(Path(self._cache_dir_root) / "symgen_work" / self.config_id)
        result = generate(settings, write=False)
        return [datasets.SplitGenerator(name=datasets.Split.TRAIN, gen_kwargs={"rows": result.rows})]

    def _generate_examples(self, rows: Iterable[dict]):
        for index, row in enumerate(rows):
            yield index, row
