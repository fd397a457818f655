"""MTOP synthetic data (SymGen): the ``mtop`` task's builder."""

import datasets

from .base import SymgenBuilder, builder_config_class


class MtopSynth(SymgenBuilder):
    """Task-oriented requests with TOP logical forms, checked against MTOP's labels."""

    BUILDER_CONFIG_CLASS = builder_config_class("mtop")
    BUILDER_CONFIGS = [BUILDER_CONFIG_CLASS(name="default", version=datasets.Version("1.0.0"))]
