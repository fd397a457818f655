"""``datasets`` builders, one module per dataset family (installed as ``symgen_datasets.builders``)."""

from .base import SymgenBuilder, SymgenBuilderConfig, builder_config_class
from .break_synth import BreakSynth
from .geoquery_sql_synth import GeoquerySqlSynth
from .geoquery_synth import GeoquerySynth
from .mtop_synth import MtopSynth
from .nl2bash_synth import Nl2bashSynth
from .python_synth import PythonSynth
from .spider_synth import SpiderSynth

__all__ = ["BreakSynth", "GeoquerySqlSynth", "GeoquerySynth", "MtopSynth", "Nl2bashSynth", "PythonSynth", "SpiderSynth", "SymgenBuilder",
           "SymgenBuilderConfig", "builder_config_class"]
