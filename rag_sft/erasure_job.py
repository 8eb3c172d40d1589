"""erase_requests: a user's events erased from every derived artefact (docs/spec.md, "Rule 14: Privacy").

Launched from the UI (Jobs → erase_requests, config `request_ids`) or by `rag-sft erase`.
The ids go into the erasure ledger first, so any day materialized from then on leaves them
out; then every artefact built before is rewritten without them (`io/erasure.py`), and the
rewritten partitions are reported as materializations of their assets (counts carried over,
with `erased`), so the UI, the export ledger and dataset versions see the new contents.
"""

import hashlib
from datetime import UTC, datetime

import dagster as dg
from pydantic import Field

from rag_sft.assets.pairs import pairs_path
from rag_sft.core import erasure, pii
from rag_sft.core.trigger import ExportLedger
from rag_sft.io import erasure as erase_io
from rag_sft.io.llm.llm_completion import redacted_url
from rag_sft.io.registry.dataset_versions import DatasetVersions
from rag_sft.io.registry.model_registry import ModelRegistry
from rag_sft.io.state.erasure_ledger import ErasureLedger
from rag_sft.io.state.export_ledger import update_ledger
from rag_sft.io.state.near_duplicate_index import NearDuplicateIndex
from rag_sft.io.state.request_index import RequestIndex
from rag_sft.io.state.training_ledger import TrainingLedger
from rag_sft.io.storage.warehouse import PART_FILE, partition_dir
from rag_sft.resources import Completions, Warehouse

ERASE_JOB = "erase_requests"
ERASE_OP = "erase_everywhere"  # run config: ops.erase_everywhere.config.request_ids
# The warehouse an erase run erased in (its identity), so a state store younger than the run is found (lost_state.py).
WAREHOUSE_TAG = "rag_sft/warehouse"


class EraseConfig(dg.Config):
    request_ids: list[str] = Field(description="The request_ids whose events are erased from every derived artefact.")


@dg.op(
    name=ERASE_OP,
    description="Record the request_ids in the erasure ledger and rewrite every artefact that holds them without "
    "them: Parquet partitions, daily exports, the LLM answer cache, dataset versions, training datasets; flag "
    "the model versions trained on them.",
)
def erase_requests_op(
    context: dg.OpExecutionContext, config: EraseConfig, warehouse: Warehouse, completions: Completions
) -> dg.Output[dict]:
    ids = erasure.request_ids(config.request_ids)
    if not ids:
        raise dg.Failure("no request_id to erase", allow_retries=False)
    context.instance.add_run_tags(context.run_id, {WAREHOUSE_TAG: warehouse.identity()})
    with warehouse.open_state(ErasureLedger) as ledger:
        new = ledger.record(ids, context.run_id)
    # The tables and exports name a request_id holding personal data by its pseudonym (core/pii.py).
    stored_ids = pii.id_forms(ids)
    erased = set(stored_ids)
    note = {
        "erasure_run": context.run_id,
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "request_ids": len(ids),
    }
    exportable = update_ledger(context.instance, ExportLedger()).exportable()
    days = sorted({day for table in erase_io.TABLES for day in erase_io.days_holding(warehouse.table_dir(table), stored_ids)})

    removed_rows: dict[str, dict[str, int]] = {}
    erased_samples: dict[str, list[str]] = {}
    keys: list[str] = []
    answers: list[str] = []
    endpoint = redacted_url(completions.base_url)
    for day in days:
        # A run of the day waits (or is waited for): it ingests without the ids from here on.
        with warehouse.day_lock(day, context.log):
            removed = {}
            for table in erase_io.TABLES:
                if (partition_dir(warehouse.table_dir(table), day) / PART_FILE).exists():
                    rows = erase_io.rewrite_partition(
                        warehouse.table_dir(table), day, stored_ids, warehouse.parquet_compression
                    )
                    if rows.num_rows:
                        removed[table] = rows
                        _report(context, table, day, rows.num_rows, erasure.removed_counts(table, rows))
            if "embedding_pairs" in removed:
                erase_io.rewrite_pairs_jsonl(warehouse.table_dir("embedding_pairs"), day, pairs_path(warehouse, day))
            _erase_day_export(context, warehouse, day, erased, exportable)
        if "sft_records" in removed:
            records = removed["sft_records"]
            erased_samples[day] = records.column("sample_id").to_pylist()
            keys += erase_io.cache_keys(records, removed.get("annotated_samples"), endpoint, completions.llm_settings())
            answers += erase_io.llm_answers(records)
        removed_rows[day] = {table: rows.num_rows for table, rows in removed.items()}

    # The cross-day indexes: a later copy of an erased request is not "first seen" on a day that
    # no longer holds it, and no later question is set aside for an erased sample.
    with warehouse.open_state(RequestIndex) as requests:
        index_rows = requests.erase(ids)
    with warehouse.open_state(NearDuplicateIndex) as near_duplicates:
        index_rows += near_duplicates.erase(erased_samples)
    with warehouse.open_state(TrainingLedger) as training_ledger:  # the training sensor's sample_ids
        ledger_rows = training_ledger.erase(erased_samples)

    cache_entries = 0
    if warehouse.has_completion_cache():
        with warehouse.completion_cache() as cache:
            cache_entries = cache.erase(keys, answers)

    versions = DatasetVersions(warehouse.versions_dir())
    rewritten_versions: dict[str, dict] = {}
    for name in versions.names():
        previous = versions.manifest(name)["hash"]
        manifest = versions.erase(
            name, lambda folder, into: erase_io.erase_record_files(folder, erase_io.EXPORT_FILES, erased, into), note
        )
        if manifest:
            removed_here = manifest["erasures"][-1]["records_removed"]
            rewritten_versions[name] = {
                "records_removed": removed_here,
                "previous_hash": previous,
                "hash": manifest["hash"],
            }
    training = erase_io.erase_training_datasets(warehouse.training_dir(), erased, note)
    for name in training:  # a host's download of it holds the records: the next reader fetches the new files
        warehouse.forget_local_copy(warehouse.training_dir() / name)
    registry = ModelRegistry(warehouse.models_dir())
    flagged = erase_io.flag_models(registry, {name: v["records_removed"] for name, v in rewritten_versions.items()})

    report = {
        "request_ids": len(ids),
        "new_in_ledger": len(new),
        "days": removed_rows,
        "cache_entries_removed": cache_entries,
        "index_rows_removed": index_rows,
        "training_ledger_rows_removed": ledger_rows,
        "dataset_versions_rewritten": rewritten_versions,
        "training_datasets_rewritten": training,
        "models_trained_on_erased": {
            e["version"]: e["erased_records"] for e in erase_io.models_trained_on_erased(registry)
        },
        "models_flagged_now": [e["version"] for e in flagged],
    }
    context.log.info(f"erased {len(ids)} request_ids: {report}")
    metadata = {
        key: dg.MetadataValue.json(value) if isinstance(value, dict | list) else value for key, value in report.items()
    }
    return dg.Output(report, metadata=metadata)


def _report(context: dg.OpExecutionContext, asset: str, day: str, rows: int, removed: dict) -> None:
    """A materialization of the rewritten partition: the latest one's metadata with its counts
    lowered and `erased` raised (so read = accepted + duplicates + rejected + erased still holds)."""
    previous = _latest_metadata(context.instance, asset, day)
    values = {key: value.value for key, value in previous.items()}
    updated = erasure.counts_after_erasure(values, rows, removed)
    context.log_event(
        dg.AssetMaterialization(asset, partition=day, metadata={**previous, **updated, "erasure_run": context.run_id})
    )


def _erase_day_export(context, warehouse: Warehouse, day: str, erased: set[str], exportable: dict) -> None:
    """The day's published files without the erased records. When the day was exportable with
    exactly these files, a new sft_jsonl materialization carries the new hash, so the training
    sensor and dataset versions see the erased contents (and nothing else changes for them)."""
    records = warehouse.jsonl_path(day)
    if not records.is_file():
        return
    before = hashlib.sha256(records.read_bytes()).hexdigest()
    removed = erase_io.erase_record_files(warehouse.export_dir(day), erase_io.EXPORT_FILES, erased)
    if not removed or day not in exportable or exportable[day].sha256 != before:
        return
    data = records.read_bytes()
    pairs = warehouse.preferences_path(day)
    updated = {
        "dagster/row_count": len(data.splitlines()),
        "sha256": hashlib.sha256(data).hexdigest(),
        "bytes": len(data),
        "preference_pairs": len(pairs.read_bytes().splitlines()) if pairs.is_file() else 0,
        erasure.ERASED: removed,
        "erasure_run": context.run_id,
    }
    metadata = {**_latest_metadata(context.instance, "sft_jsonl", day), **updated}
    context.log_event(dg.AssetMaterialization("sft_jsonl", partition=day, metadata=metadata))


def _latest_metadata(instance: dg.DagsterInstance, asset: str, day: str) -> dict:
    latest = instance.fetch_materializations(dg.AssetRecordsFilter(dg.AssetKey(asset), asset_partitions=[day]), limit=1)
    return dict(latest.records[0].asset_materialization.metadata) if latest.records else {}


@dg.job(
    name=ERASE_JOB,
    description="Erase users' events on request (docs/spec.md, 'Rule 14: Privacy'): config request_ids.",
)
def erase_requests_job():
    erase_requests_op()
