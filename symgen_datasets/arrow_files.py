"""Arrow files written and read as streams, so that memory does not grow with a run's size.

``datasets`` memory-maps the Arrow files behind a :class:`~datasets.Dataset`, and opening one
(``Dataset.from_file``) reads every record batch's header through the map: the kernel then keeps
most of the file's pages resident while the dataset lives. The pipeline therefore writes its
intermediate files with :func:`write_arrow` and handles them as :class:`ArrowTable` objects,
read batch by batch with plain file reads; a :class:`~datasets.Dataset` is opened only when a
caller asks for one (:meth:`ArrowTable.to_dataset`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import datasets
import pyarrow as pa


@dataclass(frozen=True)
class ArrowTable:
    """Rows stored in Arrow stream files (what ``datasets`` writes), read in order as a stream
    with plain file reads, never memory-mapped: memory holds one record batch at a time.

    Iterating gives the rows as dicts; ``len()`` is the number of rows.

    Attributes:
        paths: the files, in order (a table may span several, e.g. the shards of a run).
        features: the columns read, with their ``datasets`` features (a subset of the files'
            columns, in this order).
        num_rows: rows in all the files.
    """

    paths: tuple[str, ...]
    features: datasets.Features
    num_rows: int

    @classmethod
    def concatenate(cls, tables: Sequence["ArrowTable"]) -> "ArrowTable":
        """The rows of ``tables``, one after the other (same features).

        Raises:
            ValueError: no table, or features that differ.
        """
        if not tables or any(table.features != tables[0].features for table in tables):
            raise ValueError("ArrowTable.concatenate needs at least one table, all with the same features")
        return cls(sum((table.paths for table in tables), ()), tables[0].features, sum(len(table) for table in tables))

    @property
    def column_names(self) -> list[str]:
        return list(self.features)

    def __len__(self) -> int:
        return self.num_rows

    def batches(self) -> Iterator[pa.RecordBatch]:
        """The rows as :class:`pyarrow.RecordBatch` objects of :attr:`column_names`."""
        for path in self.paths:
            yield from read_arrow_batches(path, self.column_names)

    def __iter__(self) -> Iterator[dict]:
        for batch in self.batches():
            yield from batch.to_pylist()

    def select_columns(self, names: Sequence[str]) -> "ArrowTable":
        """The same rows with only the columns ``names``, in that order.

        Raises:
            KeyError: a name is not a column.
        """
        return ArrowTable(self.paths, datasets.Features({name: self.features[name] for name in names}), self.num_rows)

    def to_dataset(self) -> datasets.Dataset:
        """The rows as a :class:`datasets.Dataset` backed by the same files (memory-mapped)."""
        parts = [datasets.Dataset.from_file(path) for path in self.paths]
        dataset = parts[0] if len(parts) == 1 else datasets.concatenate_datasets(parts)
        return dataset.select_columns(self.column_names)


def write_arrow(path: Path, features: datasets.Features, rows: Iterable[dict]) -> ArrowTable:
    """Write ``rows`` (an iterable, consumed as it comes) to the Arrow file ``path`` with
    ``datasets``' :class:`~datasets.arrow_writer.ArrowWriter`, all or nothing: the rows go to a
    hidden temporary file renamed into place at the end, and the temporary file is removed if
    ``rows`` raises.

    Returns:
        The file as an :class:`ArrowTable` (``Dataset.from_file(path)`` opens it as a dataset).
    """
    from datasets.arrow_writer import ArrowWriter

    temporary = path.with_name(f".{path.name}.tmp")
    writer = ArrowWriter(features=features, path=str(temporary), writer_batch_size=256)
    try:
        for row in rows:
            writer.write(row)
        num_rows, _ = writer.finalize()
    except BaseException:
        writer.close()
        temporary.unlink(missing_ok=True)
        raise
    writer.close()
    temporary.replace(path)
    return ArrowTable((str(path),), features, num_rows)


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


def stream_batches(dataset: datasets.Dataset | ArrowTable, batch_size: int = 1000) -> Iterator[pa.RecordBatch]:
    """The rows of ``dataset`` in order, as record batches of its columns.

    An :class:`ArrowTable`, or a dataset that is all the rows of its Arrow files, in order (no
    indices mapping, which is ``datasets``' private ``_indices``, and as many rows as the files:
    not a slice such as a shard), is read from its files with :func:`read_arrow_batches`; any
    other dataset through :meth:`Dataset.iter` (``batch_size`` rows at a time).
    """
    if isinstance(dataset, ArrowTable):
        yield from dataset.batches()
        return
    files = [entry["filename"] for entry in dataset.cache_files]
    if files and getattr(dataset, "_indices", None) is None and sum(map(_count_rows, files)) == len(dataset):
        for path in files:
            yield from read_arrow_batches(path, dataset.column_names)
        return
    for table in dataset.with_format("arrow").iter(batch_size=batch_size):
        yield from table.to_batches()
