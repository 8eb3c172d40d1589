"""Partitions are replaced whole; free text is written plain, every other column indexed."""

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rag_sft.core import tables
from rag_sft.io.storage.warehouse import PartitionWriter, leaf_paths, read_batches


def test_leaf_paths_name_nested_columns_as_parquet_does(tmp_path):
    for schema in (tables.RAW_EVENTS, tables.ANNOTATED_SAMPLES):
        pq.write_table(schema.empty_table(), tmp_path / "empty.parquet")
        written = pq.ParquetFile(tmp_path / "empty.parquet").schema
        assert leaf_paths(schema) == [written.column(i).path for i in range(len(written))]


def test_free_text_is_plain_without_statistics_and_the_rest_keeps_dictionaries(tmp_path):
    rows = [
        {"source": "a.jsonl", "source_line": n, "outcome": "rejected", "reason": "invalid_json", "detail": f"d{n}",
         "request_id": f"r{n}", "raw_text": "{" * n}
        for n in range(50)
    ]
    with PartitionWriter(tmp_path / "t", "2026-11-19", tables.REJECTED_EVENTS, free_text=tables.FREE_TEXT) as writer:
        writer.write(pa.RecordBatch.from_pylist(rows, tables.REJECTED_EVENTS))
        path = writer.commit()
    group = pq.ParquetFile(path).metadata.row_group(0)
    columns = {group.column(i).path_in_schema: group.column(i) for i in range(group.num_columns)}
    for name in ("detail", "raw_text"):
        assert "RLE_DICTIONARY" not in columns[name].encodings and not columns[name].is_stats_set
    assert "RLE_DICTIONARY" in columns["reason"].encodings and columns["source_line"].statistics.max == 49
    assert [row for batch in read_batches(tmp_path / "t", "2026-11-19") for row in batch.to_pylist()] == rows


def test_a_failed_write_leaves_the_previous_partition(tmp_path):
    def write(rows, fail=False):
        with PartitionWriter(tmp_path / "t", "2026-11-19", tables.REJECTED_EVENTS) as writer:
            writer.write(pa.RecordBatch.from_pylist(rows, tables.REJECTED_EVENTS))
            if fail:
                raise RuntimeError("disk full")
            writer.commit()

    first = [{"source": "a", "source_line": 1, "outcome": "rejected", "reason": "x", "detail": "", "request_id": None, "raw_text": ""}]
    write(first)
    with pytest.raises(RuntimeError):
        write(first * 3, fail=True)
    assert [row for batch in read_batches(tmp_path / "t", "2026-11-19") for row in batch.to_pylist()] == first
    assert [p.name for p in (tmp_path / "t").iterdir()] == ["date=2026-11-19"]
