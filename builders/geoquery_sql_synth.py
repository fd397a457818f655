"""GeoQuery-SQL synthetic data (SymGen): the ``geoquery_sql`` task's builder."""

import datasets

from .base import SymgenBuilder, SymgenBuilderConfig


class GeoquerySqlSynth(SymgenBuilder):
    """Questions about US geography with SQL, verified on the GeoQuery database."""

    BUILDER_CONFIGS = [
        SymgenBuilderConfig(name="default", task="geoquery_sql", version=datasets.Version("1.0.0")),
    ]
