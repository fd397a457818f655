"""Publishing a run: the Hub-style dataset folder (parquet + card), the card, the summary.

Below the pipeline's run and above nothing of it: the card is rendered from the run's
``symgen`` metadata block alone (:func:`render_card`), so pushing a folder needs no task.
"""

from contextlib import contextmanager

from .card import dataset_block, read_card, read_folder_card, render_card, size_category
from .folder import check_output, config_dir, configs_metadata, write_dataset_folder
from .summary import format_summary


@contextmanager
def quiet_datasets():
    """Hide ``datasets``' own progress bars for quick internal steps (casts, parquet writes)."""
    import datasets

    enabled = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if enabled:
            datasets.enable_progress_bars()


__all__ = [
    "check_output",
    "config_dir",
    "configs_metadata",
    "dataset_block",
    "format_summary",
    "quiet_datasets",
    "read_card",
    "read_folder_card",
    "render_card",
    "size_category",
    "write_dataset_folder",
]
