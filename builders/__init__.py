"""``datasets`` builders, one module per dataset family (installed as ``symgen_datasets.builders``)."""

from .base import SymgenBuilder, SymgenBuilderConfig
from .geoquery_sql_synth import GeoquerySqlSynth
from .spider_synth import SpiderSynth

__all__ = ["GeoquerySqlSynth", "SpiderSynth", "SymgenBuilder", "SymgenBuilderConfig"]
