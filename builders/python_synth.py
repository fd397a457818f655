"""Python (HumanEval-style) synthetic data (SymGen): the ``python`` task's builder."""

import datasets

from .base import SymgenBuilder, builder_config_class


class PythonSynth(SymgenBuilder):
    """HumanEval-style Python problems with solutions that agree on generated test inputs."""

    BUILDER_CONFIG_CLASS = builder_config_class("python")
    BUILDER_CONFIGS = [BUILDER_CONFIG_CLASS(name="default", version=datasets.Version("1.0.0"))]
