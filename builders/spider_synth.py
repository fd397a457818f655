"""Spider synthetic data (SymGen): the ``spider`` task's builder."""

import datasets

from .base import SymgenBuilder, builder_config_class


class SpiderSynth(SymgenBuilder):
    """Cross-database text-to-SQL questions and SQL, verified on Spider's SQLite databases."""

    BUILDER_CONFIG_CLASS = builder_config_class("spider")
    BUILDER_CONFIGS = [BUILDER_CONFIG_CLASS(name="default", version=datasets.Version("1.0.0"))]
