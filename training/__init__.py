"""Training small task models on symgen datasets: :mod:`.config` (:class:`TrainConfig`, every
setting once), :mod:`.finetune` (:func:`train`, the Accelerate script behind ``symgen train``)
and :mod:`.task_model` (how a model reads a task's input and writes its program, for training and
for ``symgen evaluate``). Installed as ``symgen_datasets.training``::

    from symgen_datasets.training import TrainConfig, train

    result = train(TrainConfig(dataset="./geoquery_sql-synth", output_dir="./geo-t1"))
"""

from __future__ import annotations

from typing import Any

__all__ = ["TrainConfig", "TrainResult", "train"]


def __getattr__(name: str) -> Any:
    # imported on first use: the training script loads torch and accelerate
    if name == "TrainConfig":
        from .config import TrainConfig

        return TrainConfig
    if name in ("train", "TrainResult"):
        from . import finetune

        return getattr(finetune, name)
    raise AttributeError(name)
