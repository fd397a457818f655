"""Write a Hub-style dataset repository folder, all or nothing.

Layout (what ``datasets.load_dataset(folder)`` and the Hub read, with no remote code)::

    README.md                                        dataset card; YAML ``configs:`` names the files
    data/train-00000-of-00001-<sha256>.parquet       config "default"
    <config>/train-00000-of-00001-<sha256>.parquet   every other config (e.g. "candidates")

File names carry the first 16 hex digits of their content's SHA-256 and the card names them
exactly: ``datasets`` keys its cache for a local folder by the folder's name and the card's YAML
only, so a folder rewritten with new data under the same file names would load stale rows from
the cache. Content-addressed names make every new content a new cache entry.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable

from datasets import Dataset

from ..arrow_files import ArrowTable, stream_batches
from ..errors import InputError


def config_dir(name: str) -> str:
    """The folder of a config's parquet files: ``data`` for ``default``, else its name."""
    return "data" if name == "default" else name


def configs_metadata(files: dict[str, str]) -> list[dict]:
    """The card's YAML ``configs:`` entries: config name -> its parquet file (one ``train`` split
    each); ``default`` is marked as the default config."""
    return [
        {
            "config_name": name,
            "data_files": [{"split": "train", "path": path}],
            **({"default": True} if name == "default" else {}),
        }
        for name, path in files.items()
    ]


def _write_parquet(dataset: Dataset | ArrowTable, folder: Path) -> str:
    """Write ``dataset`` into ``folder`` under a content-addressed name; return the name.

    The rows are streamed (:func:`~symgen_datasets.arrow_files.stream_batches`), a row group per
    batch, with the features in the schema's metadata as ``datasets`` writes them; memory does
    not grow with the dataset's size."""
    import pyarrow.parquet as pq

    partial = folder / "train.parquet.partial"
    schema = dataset.features.arrow_schema
    with pq.ParquetWriter(str(partial), schema) as writer:
        for batch in stream_batches(dataset):
            writer.write_batch(batch.cast(schema))
    with partial.open("rb") as handle:
        digest = hashlib.file_digest(handle, "sha256").hexdigest()[:16]
    name = f"train-00000-of-00001-{digest}.parquet"
    partial.rename(folder / name)
    return name


def check_output(output: str | Path, overwrite: bool) -> Path:
    """Refuse, before any work, an ``--output`` that exists and is not empty (unless
    ``overwrite``), or that could not be written at the end of the run.

    Raises:
        InputError: the folder exists and is not empty, is a file, or its parent (the nearest
            folder that exists) does not let us create files.
    """
    output = Path(output)
    if output.is_file():
        raise InputError(f"--output {output}: is a file; give a folder path")
    if output.is_dir() and any(output.iterdir()) and not overwrite:
        raise InputError(f"--output {output}: folder exists and is not empty; pass --overwrite or another folder")
    parent = output.absolute().parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    try:
        if not parent.is_dir():
            raise NotADirectoryError(f"{parent} is not a folder")
        with tempfile.NamedTemporaryFile(dir=parent, prefix=f".{output.name}.probe-"):
            pass
    except OSError as error:
        raise InputError(
            f"--output {output}: cannot write there ({parent}: {error.strerror or error}); give a folder you can write"
        ) from None
    return output


def write_dataset_folder(
    output: str | Path,
    configs: dict[str, Dataset | ArrowTable],
    card: Callable[[list[dict]], str],
    overwrite: bool = False,
) -> Path:
    """Write ``configs`` as parquet and their card as ``README.md`` into ``output``, atomically.

    Everything is written to a hidden sibling folder first and renamed into place at the end, so
    a failure never leaves a half-written dataset (and an existing one is replaced only then).

    Args:
        output: the folder to create.
        configs: config name -> Dataset or ArrowTable (one ``train`` split each); ``default``
            first.
        card: called with the YAML ``configs:`` entries (see :func:`configs_metadata`) once the
            files are written; returns the README.md text (YAML header + body).
        overwrite: replace an existing non-empty folder.

    Returns:
        The output path.

    Raises:
        InputError: see :func:`check_output`.
    """
    output = check_output(output, overwrite)
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = output.parent / f".{output.name}.partial-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        files = {}
        for name, dataset in configs.items():
            folder = staging / config_dir(name)
            folder.mkdir(parents=True)
            files[name] = f"{config_dir(name)}/{_write_parquet(dataset, folder)}"
        (staging / "README.md").write_text(card(configs_metadata(files)), encoding="utf-8")
        if output.exists():
            old = output.parent / f".{output.name}.old-{os.getpid()}"
            output.rename(old)
            staging.rename(output)
            shutil.rmtree(old, ignore_errors=True)
        else:
            staging.rename(output)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return output
