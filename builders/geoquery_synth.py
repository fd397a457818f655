"""GeoQuery Prolog synthetic data (SymGen): the ``geoquery`` task's builder."""

import datasets

from .base import SymgenBuilder, builder_config_class


class GeoquerySynth(SymgenBuilder):
    """US-geography questions with GeoQuery Prolog queries, executed by SWI-Prolog over geobase."""

    BUILDER_CONFIG_CLASS = builder_config_class("geoquery")
    BUILDER_CONFIGS = [BUILDER_CONFIG_CLASS(name="default", version=datasets.Version("1.0.0"))]
