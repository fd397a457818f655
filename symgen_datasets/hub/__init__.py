"""Hub-style dataset repository folders (parquet + README card with YAML configs)."""

from .folder import write_dataset_folder

__all__ = ["write_dataset_folder"]
