"""S3 (Wang et al., Findings of EMNLP 2023): iterative synthesis that extrapolates a small task
model's errors on a real validation set. :func:`run_s3` is ``symgen s3``; see :mod:`.loop`."""

from .loop import S3Result, S3Settings, plot_accuracy, round_version, run_s3
from .synthesis import InputIndex, collect_errors, extrapolate

__all__ = ["InputIndex", "S3Result", "S3Settings", "collect_errors", "extrapolate", "plot_accuracy", "round_version",
           "run_s3"]
