"""sft_jsonl: the day's exported records as one JSON Lines file, replaced whole on re-runs,
with the day's preference pairs beside it when an LLM corrected the answers, and the
records in the trainer formats chosen in `trainer_exports`."""

from collections import Counter
from contextlib import ExitStack

import dagster as dg
import orjson
import pyarrow.compute as pc

from rag_sft.assets.metadata import DATA_OWNERS, PIPELINE_CODE_VERSION, humanized_bytes
from rag_sft.assets.partitions import daily_partitions
from rag_sft.checks import export_gate
from rag_sft.core import checks, samples, tables
from rag_sft.core.exports import ALPACA, export_chunk, file_name, llama_factory_dataset_info
from rag_sft.core.parallel import ordered_map
from rag_sft.io.state.export_ledger import export_status, hold_back_reasons
from rag_sft.io.storage.jsonl_check import check_jsonl_file
from rag_sft.io.storage.location import Location
from rag_sft.io.storage.memory import streaming_day
from rag_sft.io.storage.warehouse import RowGroup, StagedFile, row_groups
from rag_sft.resources import ExportChecks, TrainerExports, Warehouse

RECORDS, PREFERENCES = "records", "preferences"

# The sft_records columns the files are made of ("date" comes from the partition).
_SOURCE_COLUMNS = [
    name
    for name in dict.fromkeys([*tables.JSONL_SOURCE_COLUMNS, "status", *samples.PREFERENCE_FIELDS.values()])
    if name != "date"
]


def _chunks_of_group(group: RowGroup, columns: list[str], day: str, exports: TrainerExports) -> dict[str, tables.JsonlChunk]:
    records = group.read(columns)  # read in the thread: decoding releases the GIL
    chunks = {RECORDS: tables.jsonl_chunk(records, day), PREFERENCES: tables.preference_chunk(records, day)}
    if exports.formats:
        exported = records.filter(pc.equal(records.column("status"), samples.EXPORTED))
        for export_format in exports.formats:
            chunks[export_format] = export_chunk(exported, export_format, exports.system_message)
    return chunks


SFT_JSONL = dg.AssetKey("sft_jsonl")


# A multi-asset only for `can_subset`: it makes the format check's result optional. A held-back
# day yields neither: the step fails on purpose (`export_gate.not_published`), so no day is left
# with a skipped optional output (which backfills count as failed since Dagster 1.13.22 anyway).
@dg.multi_asset(
    specs=[
        dg.AssetSpec(
            SFT_JSONL,
            deps=["sft_records"],
            group_name="export",
            kinds={"json"},
            description="Daily SFT JSON Lines (prompt, completion, label, confidence, score, weights, lineage), "
            "published only when its format check passes and sft_records did not hold the day back; a held-back "
            "day is not materialized: the step fails on purpose, saying why, so the day reads Failed. Preference "
            "pairs beside it for LLM-corrected days, and the trainer formats chosen in trainer_exports.",
            owners=DATA_OWNERS,
            code_version=PIPELINE_CODE_VERSION,
        )
    ],
    partitions_def=daily_partitions,
    check_specs=[export_gate.EXPORT_FORMAT],
    can_subset=True,
)
def sft_jsonl(
    context: dg.AssetExecutionContext, warehouse: Warehouse, export_checks: ExportChecks, trainer_exports: TrainerExports
):
    if SFT_JSONL not in context.selected_asset_keys:
        raise dg.Failure(
            "export_format checks the JSONL as sft_jsonl writes it, before publishing: materialize sft_jsonl",
            allow_retries=False,
        )
    day = context.partition_key
    # The verdict is read where the sensor, the ledger and dataset versions read it: the latest
    # sft_records materialization of the day on this instance (it carries the checks'
    # descriptions; a marker file beside the partition would be a second home that could
    # disagree). Materializing sft_jsonl alone must not publish what the checks held back.
    reasons = hold_back_reasons(context.instance, day)
    if reasons:
        raise _held_back(context, warehouse, reasons)
    folder = warehouse.export_dir(day)
    paths = {
        RECORDS: warehouse.jsonl_path(day),
        PREFERENCES: warehouse.preferences_path(day),
        **{name: folder / file_name(name) for name in trainer_exports.formats},
    }
    lines: Counter = Counter()
    with streaming_day(), ExitStack() as files:
        staged = {name: files.enter_context(StagedFile(path)) for name, path in paths.items()}
        groups = row_groups(warehouse.table_dir("sft_records"), day)
        for _, chunks in ordered_map(
            _chunks_of_group, groups, warehouse.worker_count(), _SOURCE_COLUMNS, day, trainer_exports, threads=True
        ):
            for name, chunk in chunks.items():
                staged[name].append(chunk.data)
                lines[name] += chunk.lines
        sizes = {name: file.finish() for name, file in staged.items()}
        # The records are checked as written, before anyone can see them (the other files are
        # made of the same rows).
        report = check_jsonl_file(staged[RECORDS].path, day, warehouse.worker_count())
        verdict = checks.export_format_verdict(report, export_checks.export_format_severity)
        if verdict.holds_back:
            reasons = export_gate.hold_back(context, warehouse, [verdict])
        else:
            for name, file in staged.items():
                if name == PREFERENCES and not lines[PREFERENCES]:
                    continue  # no corrected answers: no pairs file (an earlier run's goes below)
                file.publish()
            _remove_stale(folder, [file.final for file in staged.values() if file.published])
            if ALPACA in trainer_exports.formats:
                info = llama_factory_dataset_info([(f"rag_sft_{day}", file_name(ALPACA))])
                (folder / "dataset_info.json").write_bytes(orjson.dumps(info, option=orjson.OPT_INDENT_2))
    if verdict.holds_back:
        yield export_gate.check_result(verdict)  # recorded as evaluated (failed), then the step fails
        raise export_gate.not_published(context, checks.EXPORT_FORMAT, reasons)
    yield dg.MaterializeResult(metadata=_export_metadata(lines, sizes[RECORDS], staged, paths, trainer_exports.formats))
    yield export_gate.check_result(verdict)


def _export_metadata(lines: Counter, records_size: tuple[int, str], staged: dict, paths: dict, formats) -> dict:
    """sft_jsonl's numbers for the UI, and the paths of what it published (a held-back day has none)."""
    size, sha256 = records_size
    published = staged[RECORDS].published
    metadata = {
        "dagster/row_count": lines[RECORDS],
        "published": published,
        "export": export_status(""),
        "bytes": size,
        "size": humanized_bytes(size),
        "sha256": sha256,
        "preference_pairs": lines[PREFERENCES],
    }
    if published:
        metadata["path"] = dg.MetadataValue.path(str(paths[RECORDS]))
    if staged[PREFERENCES].published:
        metadata["preferences_path"] = dg.MetadataValue.path(str(paths[PREFERENCES]))
    if published:
        metadata.update({f"trainer_export/{name}": dg.MetadataValue.path(str(paths[name])) for name in formats})
    return metadata


def _held_back(context: dg.AssetExecutionContext, warehouse: Warehouse, reasons: str) -> dg.Failure:
    """The day as its latest sft_records evaluation left it: held back, nothing published (its
    exports withdrawn again, in case a file came back since); the Failure to raise. The format
    check is not evaluated: there is no file to read."""
    day = context.partition_key
    warehouse.withdraw_exports(day)
    records = dg.AssetRecordsFilter(asset_key=dg.AssetKey("sft_records"), asset_partitions=[day])
    latest = context.instance.fetch_materializations(records, limit=1).records[0]
    held_back_by = _held_back_by(context.instance, latest.run_id) or "its checks"
    return export_gate.not_published(context, held_back_by, reasons)


def _held_back_by(instance: dg.DagsterInstance, run_id: str) -> str:
    """The checks that held the day back in the run of its latest sft_records materialization."""
    run = instance.get_run_by_id(run_id)
    return run.tags.get(export_gate.HELD_BACK_TAG, "") if run else ""


def _remove_stale(folder: Location, keep: list[Location]) -> None:
    """The day's folder holds this run's files only: a format no longer chosen, or pairs of an
    earlier LLM run, go (the day is replaced whole)."""
    for path in folder.iterdir():
        if path.is_file() and not path.name.startswith(".") and path not in keep:
            path.unlink()
