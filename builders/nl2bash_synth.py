"""NL2Bash synthetic data (SymGen): the ``nl2bash`` task's builder."""

import datasets

from .base import SymgenBuilder, builder_config_class


class Nl2bashSynth(SymgenBuilder):
    """Natural-language descriptions with Bash command lines, parsed by bashlex."""

    BUILDER_CONFIG_CLASS = builder_config_class("nl2bash")
    BUILDER_CONFIGS = [BUILDER_CONFIG_CLASS(name="default", version=datasets.Version("1.0.0"))]
