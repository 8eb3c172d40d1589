"""sft_jsonl: the day's exported records as one JSON Lines file, replaced whole on re-runs,
with the day's preference pairs beside it when an LLM corrected the answers."""

import dagster as dg

from rag_sft.assets.partitions import daily_partitions
from rag_sft.checks import export_gate
from rag_sft.core import checks, samples, tables
from rag_sft.core.parallel import ordered_map
from rag_sft.io.jsonl_check import check_jsonl_file
from rag_sft.io.memory import streaming_day
from rag_sft.io.warehouse import RowGroup, StagedFile, row_groups
from rag_sft.resources import ExportChecks, Warehouse

# The sft_records columns both files are made of ("date" comes from the partition).
_SOURCE_COLUMNS = [
    name
    for name in dict.fromkeys([*tables.JSONL_SOURCE_COLUMNS, "status", *samples.PREFERENCE_FIELDS.values()])
    if name != "date"
]


def _chunks_of_group(group: RowGroup, columns: list[str], day: str) -> tuple[tables.JsonlChunk, tables.JsonlChunk]:
    records = group.read(columns)  # read in the thread: decoding releases the GIL
    return tables.jsonl_chunk(records, day), tables.preference_chunk(records, day)


@dg.asset(
    deps=["sft_records"],
    partitions_def=daily_partitions,
    group_name="export",
    kinds={"json"},
    description="Daily SFT JSON Lines (prompt, completion, label, confidence, score, weights, lineage), "
    "published only when its format check passes; preference pairs beside it for LLM-corrected days.",
    check_specs=[export_gate.EXPORT_FORMAT],
)
def sft_jsonl(context: dg.AssetExecutionContext, warehouse: Warehouse, export_checks: ExportChecks):
    day = context.partition_key
    path = warehouse.jsonl_path(day)
    preferences_path = warehouse.preferences_path(day)
    lines = pairs = 0
    with streaming_day(), StagedFile(path) as staged, StagedFile(preferences_path) as staged_pairs:
        groups = row_groups(warehouse.table_dir("sft_records"), day)
        for _, (records, preferences) in ordered_map(
            _chunks_of_group, groups, warehouse.worker_count(), _SOURCE_COLUMNS, day, threads=True
        ):
            staged.append(records.data)
            staged_pairs.append(preferences.data)
            lines += records.lines
            pairs += preferences.lines
        size, sha256 = staged.finish()
        staged_pairs.finish()
        # The file is checked as written, before anyone can see it.
        report = check_jsonl_file(staged.path, day, warehouse.worker_count())
        verdict = checks.export_format_verdict(report, export_checks.export_format_severity)
        if verdict.holds_back:
            export_gate.hold_back(context, warehouse, [verdict])
        else:
            staged.publish()
            if pairs:
                staged_pairs.publish()
            else:
                preferences_path.unlink(missing_ok=True)  # an earlier run's pairs are not this run's
    metadata = {
        "dagster/row_count": lines,
        "path": dg.MetadataValue.path(str(path)),
        "published": staged.published,
        "bytes": size,
        "sha256": sha256,
        "preference_pairs": pairs,
    }
    if staged_pairs.published:
        metadata["preferences_path"] = dg.MetadataValue.path(str(preferences_path))
    yield dg.MaterializeResult(metadata=metadata)
    yield export_gate.check_result(verdict)
