"""Break (QDMR) synthetic data (SymGen): the ``break`` task's builder."""

import datasets

from .base import SymgenBuilder, builder_config_class


class BreakSynth(SymgenBuilder):
    """Questions with QDMR decompositions, parsed and normalised."""

    BUILDER_CONFIG_CLASS = builder_config_class("break")
    BUILDER_CONFIGS = [BUILDER_CONFIG_CLASS(name="default", version=datasets.Version("1.0.0"))]
