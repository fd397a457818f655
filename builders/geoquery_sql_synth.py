"""GeoQuery-SQL synthetic data (SymGen): the ``geoquery_sql`` task's builder."""

import datasets

from .base import SymgenBuilder, builder_config_class


class GeoquerySqlSynth(SymgenBuilder):
    """Questions about US geography with SQL, verified on the GeoQuery database."""

    BUILDER_CONFIG_CLASS = builder_config_class("geoquery_sql")
    BUILDER_CONFIGS = [BUILDER_CONFIG_CLASS(name="default", version=datasets.Version("1.0.0"))]
