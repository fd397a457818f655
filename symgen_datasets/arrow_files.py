"""Arrow files written and read as streams, so that memory does not grow with a run's size.

``datasets`` memory-maps the Arrow files behind a :class:`~datasets.Dataset`; every page read
through the map stays resident while the dataset lives. The pipeline therefore writes its
intermediate files with :func:`write_arrow` and reads them back batch by batch with plain file
reads (:func:`stream_batches`), and the dataset objects it returns stay lazy.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Iterator

import datasets
import pyarrow as pa


def write_arrow(path: Path, features: datasets.Features, rows: Iterable[dict]) -> Path:
    """Write ``rows`` (an iterable, consumed as it comes) to the Arrow file ``path`` with
    ``datasets``' :class:`~datasets.arrow_writer.ArrowWriter`, all or nothing: the rows go to a
    hidden temporary file renamed into place at the end, and the temporary file is removed if
    ``rows`` raises.

    Returns:
        ``path``, ready for :meth:`datasets.Dataset.from_file` (memory-mapped, not loaded).
    """
    from datasets.arrow_writer import ArrowWriter

    temporary = path.with_name(f".{path.name}.tmp")
    writer = ArrowWriter(features=features, path=str(temporary), writer_batch_size=256)
    try:
        for row in rows:
            writer.write(row)
        writer.finalize()
    except BaseException:
        writer.close()
        temporary.unlink(missing_ok=True)
        raise
    writer.close()
    temporary.replace(path)
    return path


def read_arrow_batches(path: str | Path, columns: list[str] | None = None) -> Iterator[pa.RecordBatch]:
    """The record batches of an Arrow stream file (what ``datasets`` writes), read with plain
    file reads instead of a memory map: nothing stays resident after a batch is dropped.

    Yields:
        :class:`pyarrow.RecordBatch` objects, with only ``columns`` (in that order) when given.
    """
    with pa.OSFile(str(path)) as source:
        for batch in pa.ipc.open_stream(source):
            yield batch.select(columns) if columns is not None else batch


def _count_rows(path: str) -> int:
    with pa.OSFile(path) as source:
        return sum(batch.num_rows for batch in pa.ipc.open_stream(source))


def stream_batches(dataset: datasets.Dataset, batch_size: int = 1000) -> Iterator[pa.RecordBatch]:
    """The rows of ``dataset`` in order, as record batches of its columns.

    A dataset that is all the rows of its Arrow files, in order (no indices mapping, which is
    ``datasets``' private ``_indices``, and as many rows as the files: not a slice such as a
    shard) is read from its files with :func:`read_arrow_batches`; any other through
    :meth:`Dataset.iter` (``batch_size`` rows at a time).
    """
    files = [entry["filename"] for entry in dataset.cache_files]
    if files and getattr(dataset, "_indices", None) is None and sum(map(_count_rows, files)) == len(dataset):
        for path in files:
            yield from read_arrow_batches(path, dataset.column_names)
        return
    for table in dataset.with_format("arrow").iter(batch_size=batch_size):
        yield from table.to_batches()
