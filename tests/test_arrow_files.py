"""Arrow files written and read as streams."""

from __future__ import annotations

import datasets
import pytest

from symgen_datasets.arrow_files import stream_batches, write_arrow

FEATURES = datasets.Features({"n": datasets.Value("int64"), "s": datasets.Value("string")})


def test_stream_batches_reads_whole_files_and_slices_alike(tmp_path):
    """Datasets read from their Arrow files, whole or as a shard, give their own rows."""
    from datasets.distributed import split_dataset_by_node

    path = write_arrow(tmp_path / "rows.arrow", FEATURES, ({"n": i, "s": str(i)} for i in range(1000)))
    whole = datasets.Dataset.from_file(str(path))
    shard = split_dataset_by_node(whole, rank=1, world_size=3)
    for dataset in (whole, shard, whole.select_columns(["s"]), whole.filter(lambda row: row["n"] % 7 == 0)):
        rows = [row for batch in stream_batches(dataset) for row in batch.to_pylist()]
        assert rows == dataset.to_list()
    assert len(shard) == 333


def test_write_arrow_leaves_nothing_when_the_rows_fail(tmp_path):
    def rows():
        yield {"n": 1, "s": "a"}
        raise RuntimeError("the LLM server went away")

    with pytest.raises(RuntimeError):
        write_arrow(tmp_path / "rows.arrow", FEATURES, rows())
    assert list(tmp_path.iterdir()) == []
