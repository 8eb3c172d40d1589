"""sft_jsonl: the day's exported records as one JSON Lines file, replaced whole on re-runs."""

from collections.abc import Iterator

import dagster as dg
import pyarrow as pa

from rag_sft.assets.partitions import daily_partitions
from rag_sft.core import tables
from rag_sft.core.parallel import ordered_map
from rag_sft.io.memory import streaming_day
from rag_sft.io.warehouse import RowGroup, row_groups, write_file_atomically
from rag_sft.resources import Warehouse


def _jsonl_of_group(group: RowGroup, columns: list[str], day: str) -> tables.JsonlChunk:
    return tables.jsonl_chunk(group.read(columns), day)  # read in the thread: decoding releases the GIL


@dg.asset(
    deps=["sft_records"],
    partitions_def=daily_partitions,
    group_name="export",
    kinds={"json"},
    description="Daily SFT JSON Lines (prompt, completion, label, confidence, score, weights, lineage).",
)
def sft_jsonl(context: dg.AssetExecutionContext, warehouse: Warehouse):
    day = context.partition_key
    path = warehouse.jsonl_path(day)
    lines = 0

    def chunks() -> Iterator[pa.Buffer]:
        nonlocal lines
        columns = [*tables.JSONL_SOURCE_COLUMNS, "status"]
        groups = row_groups(warehouse.table_dir("sft_records"), day)
        for _, chunk in ordered_map(_jsonl_of_group, groups, warehouse.worker_count(), columns, day, threads=True):
            lines += chunk.lines
            yield chunk.data

    with streaming_day():
        size, sha256 = write_file_atomically(path, chunks())
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": lines,
            "path": dg.MetadataValue.path(str(path)),
            "bytes": size,
            "sha256": sha256,
        }
    )
