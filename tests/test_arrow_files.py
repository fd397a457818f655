"""Arrow files written and read as streams."""

from __future__ import annotations

from pathlib import Path

import datasets
import pytest

from symgen_datasets.arrow_files import ArrowTable, stream_batches, write_arrow

FEATURES = datasets.Features({"n": datasets.Value("int64"), "s": datasets.Value("string")})


def test_stream_batches_reads_whole_files_and_slices_alike(tmp_path):
    """Datasets read from their Arrow files, whole or as a shard, give their own rows."""
    from datasets.distributed import split_dataset_by_node

    table = write_arrow(tmp_path / "rows.arrow", FEATURES, ({"n": i, "s": str(i)} for i in range(1000)))
    whole = datasets.Dataset.from_file(table.paths[0])
    shard = split_dataset_by_node(whole, rank=1, world_size=3)
    for dataset in (whole, shard, whole.select_columns(["s"]), whole.filter(lambda row: row["n"] % 7 == 0), table):
        rows = [row for batch in stream_batches(dataset) for row in batch.to_pylist()]
        assert rows == (dataset.to_list() if isinstance(dataset, datasets.Dataset) else whole.to_list())
    assert len(shard) == 333


def mapped_files(folder: Path) -> set[str]:
    """Files under ``folder`` that this process has memory-mapped (Linux)."""
    maps = Path("/proc/self/maps").read_text().splitlines()
    return {line.split()[-1] for line in maps if str(folder) in line}


def test_arrow_table_reads_its_files_in_order_without_memory_maps(tmp_path):
    first = write_arrow(tmp_path / "a.arrow", FEATURES, ({"n": i, "s": str(i)} for i in range(700)))
    second = write_arrow(tmp_path / "b.arrow", FEATURES, ({"n": i, "s": str(i)} for i in range(700, 1000)))
    empty = write_arrow(tmp_path / "c.arrow", FEATURES, iter(()))
    table = ArrowTable.concatenate([first, empty, second])
    assert (len(first), len(empty), len(table)) == (700, 0, 1000)
    assert list(table) == [{"n": i, "s": str(i)} for i in range(1000)]
    assert list(table.select_columns(["s", "n"]))[3] == {"s": "3", "n": 3}
    assert mapped_files(tmp_path) == set()
    dataset = table.to_dataset()  # memory-mapped, as datasets does
    assert dataset.to_list() == list(table)
    assert {str(tmp_path / "a.arrow"), str(tmp_path / "b.arrow")} <= mapped_files(tmp_path)
    assert table.select_columns(["s"]).to_dataset().column_names == ["s"]
    with pytest.raises(ValueError, match="same features"):
        ArrowTable.concatenate([first, first.select_columns(["s"])])


def test_write_arrow_leaves_nothing_when_the_rows_fail(tmp_path):
    def rows():
        yield {"n": 1, "s": "a"}
        raise RuntimeError("the LLM server went away")

    with pytest.raises(RuntimeError):
        write_arrow(tmp_path / "rows.arrow", FEATURES, rows())
    assert list(tmp_path.iterdir()) == []
