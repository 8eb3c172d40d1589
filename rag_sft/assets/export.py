"""sft_jsonl: the day's exported records as one JSON Lines file, replaced whole on re-runs."""

from collections.abc import Iterator

import dagster as dg
import pyarrow as pa

from rag_sft.assets.partitions import daily_partitions
from rag_sft.checks import export_gate
from rag_sft.core import checks, tables
from rag_sft.core.parallel import ordered_map
from rag_sft.io.jsonl_check import check_jsonl_file
from rag_sft.io.memory import streaming_day
from rag_sft.io.warehouse import RowGroup, StagedFile, row_groups
from rag_sft.resources import ExportChecks, Warehouse


def _jsonl_of_group(group: RowGroup, columns: list[str], day: str) -> tables.JsonlChunk:
    return tables.jsonl_chunk(group.read(columns), day)  # read in the thread: decoding releases the GIL


@dg.asset(
    deps=["sft_records"],
    partitions_def=daily_partitions,
    group_name="export",
    kinds={"json"},
    description="Daily SFT JSON Lines (prompt, completion, label, confidence, score, weights, lineage), "
    "published only when its format check passes.",
    check_specs=[export_gate.EXPORT_FORMAT],
)
def sft_jsonl(context: dg.AssetExecutionContext, warehouse: Warehouse, export_checks: ExportChecks):
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

    with streaming_day(), StagedFile(path) as staged:
        size, sha256 = staged.write(chunks())
        # The file is checked as written, before anyone can see it.
        report = check_jsonl_file(staged.path, day, warehouse.worker_count())
        verdict = checks.export_format_verdict(report, export_checks.export_format_severity)
        if verdict.holds_back:
            export_gate.hold_back(context, warehouse, [verdict])
        else:
            staged.publish()
    yield dg.MaterializeResult(
        metadata={
            "dagster/row_count": lines,
            "path": dg.MetadataValue.path(str(path)),
            "published": staged.published,
            "bytes": size,
            "sha256": sha256,
        }
    )
    yield export_gate.check_result(verdict)
