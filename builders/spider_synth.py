"""Spider synthetic data (SymGen): the ``spider`` task's builder."""

import datasets

from .base import SymgenBuilder, SymgenBuilderConfig


class SpiderSynth(SymgenBuilder):
    """Cross-database text-to-SQL questions and SQL, verified on Spider's SQLite databases."""

    BUILDER_CONFIGS = [
        SymgenBuilderConfig(name="default", task="spider", version=datasets.Version("1.0.0")),
    ]
