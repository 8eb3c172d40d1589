"""A state store younger than the data it describes: refused, then rebuilt from the data.

The request index, the near-duplicate index and the erasure ledger (`io/state/state_db.py`) describe
what the warehouse exported and which requests were erased. Lost (a state folder deleted,
restored from an old backup, a new host's empty folder), they come back empty, and the next run
would export again what earlier days exported and bring erased requests back, without a word.

Each store records when it started to describe the data (`StateStore.describes_since`: its
creation, or 0 once rebuilt). The Dagster instance proves what happened before: an `sft_records`
materialization of this warehouse that exported records (its `path` under this warehouse's
table) recorded them in the indexes, and a successful `erase_requests` run of this warehouse (its
run tag) in the ledger. Such a proof older than the store means the store lost it: a day's run
refuses (`require_state_describes_data`) until the state folder is restored or rebuilt
(`rebuild_state`, `rag-sft state rebuild`): the erasure ledger from every erase run the instance
holds (their run config names the ids: the instance is the ledger's backup), the indexes from
the exported partitions of the warehouse (`sft_records` rows `exported`, their samples'
signatures from `annotated_samples`), without the erased requests.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

import dagster as dg
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from rag_sft.core import erasure, near_duplicates, samples
from rag_sft.erasure_job import ERASE_JOB, ERASE_OP, WAREHOUSE_TAG
from rag_sft.io.state.erasure_ledger import ErasureLedger
from rag_sft.io.state.near_duplicate_index import NearDuplicateIndex
from rag_sft.io.state.request_index import RequestIndex
from rag_sft.io.storage.location import listed_files
from rag_sft.io.storage.warehouse import PART_FILE, row_groups
from rag_sft.resources import SftRules, Warehouse

_PAGE = 100
REBUILD = "rag-sft state rebuild"


def require_state_describes_data(
    instance: dg.DagsterInstance, warehouse: Warehouse, near_duplicate_index: bool
) -> None:
    """Fail the run (no retry) when a store is younger than data it should describe."""
    problems = younger_stores(instance, warehouse, near_duplicate_index)
    if problems:
        raise dg.Failure(
            description=f"the pipeline's state ({warehouse.state_place()}) is younger than the data it describes: "
            + "; ".join(problems)
            + ". It was lost or replaced (a deleted or restored state folder, another host's empty one): running "
            "now would export requests again that earlier days exported and bring erased requests back. Restore "
            f"the state from a backup, or rebuild it from the warehouse and this instance's erase runs: `{REBUILD}`",
            allow_retries=False,
        )


def younger_stores(instance: dg.DagsterInstance, warehouse: Warehouse, near_duplicate_index: bool) -> list[str]:
    """What each store should know and does not: its birth after the proof of it."""
    problems = []
    with warehouse.open_state(ErasureLedger) as ledger:
        since = ledger.describes_since()
    run = _erase_run_before(instance, warehouse, since)
    if run is not None:
        problems.append(
            f"the erasure ledger was created at {_when(since)}, after erase run {run.dagster_run.run_id} "
            f"finished at {_when(run.end_time or run.update_timestamp.timestamp())}"
        )
    stores = [RequestIndex, NearDuplicateIndex] if near_duplicate_index else [RequestIndex]
    for store in stores:
        with warehouse.open_state(store) as opened:
            since = opened.describes_since()
        found = _exported_day_before(instance, warehouse, since, needs_near_duplicates=store is NearDuplicateIndex)
        if found is not None:
            day, at = found
            problems.append(
                f"the {_NAMES[store]} was created at {_when(since)}, after {day} was exported at {_when(at)}"
            )
    return problems


_NAMES = {RequestIndex: "request index", NearDuplicateIndex: "near-duplicate index"}


def _when(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds")


def _erase_run_before(instance: dg.DagsterInstance, warehouse: Warehouse, since: float):
    if not since:
        return None
    runs = instance.get_run_records(
        dg.RunsFilter(
            job_name=ERASE_JOB,
            statuses=[dg.DagsterRunStatus.SUCCESS],
            tags={WAREHOUSE_TAG: warehouse.identity()},
            updated_before=datetime.fromtimestamp(since, UTC),
        ),
        limit=1,
        ascending=True,
    )
    return runs[0] if runs else None


def _exported_day_before(
    instance: dg.DagsterInstance, warehouse: Warehouse, since: float, needs_near_duplicates: bool
) -> tuple[str, float] | None:
    """The first day of this warehouse that exported records (with near-duplicates on, where
    asked) in a materialization older than `since`: (day, when)."""
    if not since:
        return None
    table = warehouse.table_dir("sft_records")
    prefixes = tuple({str(table), str(table.absolute())})
    cursor = None
    while True:
        result = instance.fetch_materializations(
            dg.AssetRecordsFilter(dg.AssetKey("sft_records"), before_timestamp=since), _PAGE, cursor, ascending=True
        )
        for record in result.records:
            metadata = {key: value.value for key, value in record.asset_materialization.metadata.items()}
            if (
                str(metadata.get("path", "")).startswith(prefixes)
                and isinstance(metadata.get("exported"), int)
                and metadata["exported"] > 0
                and (not needs_near_duplicates or isinstance(metadata.get("near_duplicates"), dict))
            ):
                return record.partition_key, record.timestamp
        if not result.has_more:
            return None
        cursor = result.cursor


def rebuild_state(instance: dg.DagsterInstance, warehouse: Warehouse, sft_rules: SftRules) -> dict:
    """The erasure ledger, request index and near-duplicate index rebuilt from the instance's erase
    runs and the warehouse's exported partitions (run it while no day is running). Each store is
    marked young first, so one stopped half-way still refuses runs until a rebuild finishes."""
    with (
        warehouse.open_state(ErasureLedger) as ledger,
        warehouse.open_state(RequestIndex) as requests,
        warehouse.open_state(NearDuplicateIndex) as near,
    ):
        stores = (ledger, requests, near)
        for store in stores:
            store.set_describes_since(time.time())
        runs = instance.get_run_records(dg.RunsFilter(job_name=ERASE_JOB), ascending=True)
        recorded = 0
        for run in runs:
            config = (run.dagster_run.run_config or {}).get("ops", {}).get(ERASE_OP, {}).get("config", {})
            recorded += len(ledger.record(erasure.request_ids(config.get("request_ids") or []), run.dagster_run.run_id))
        erased = pa.array(ledger.request_ids(), pa.string())

        requests.clear()
        near.clear()
        banding = near_duplicates.Banding.for_threshold(sft_rules.near_duplicate_similarity)
        min_confidence = sft_rules.settings().min_confidence
        table = warehouse.table_dir("sft_records")
        days = sorted(
            path.parent.name.removeprefix("date=")
            for path in (listed_files(table, (PART_FILE,)) if table.is_dir() else {})
            if path.parent.name.startswith("date=")
        )
        exported_requests = 0
        kept_samples = 0
        for day in days:
            groups = [group.read(["request_id", "sample_id", "status"]) for group in row_groups(table, day)]
            if not groups:
                continue
            rows = pa.Table.from_batches(groups)
            still_there = pc.invert(pc.is_in(rows.column("request_id"), value_set=erased))
            rows = rows.filter(pc.and_(pc.equal(rows.column("status"), samples.EXPORTED), still_there))
            requests.replace_day(day, rows.column("request_id").to_pylist())
            exported_requests += rows.num_rows
            if sft_rules.near_duplicates:
                exported = rows.column("sample_id")
                kept_samples += _rebuild_near_duplicates(near, warehouse, day, exported, banding, min_confidence)
        for store in stores:
            store.set_describes_since(0.0)
    return {
        "erase_runs": len(runs),
        "erased_request_ids": len(erased),
        "erased_request_ids_added": recorded,
        "days": len(days),
        "exported_requests": exported_requests,
        "near_duplicate_samples": kept_samples if sft_rules.near_duplicates else "off",
    }


def _rebuild_near_duplicates(
    near: NearDuplicateIndex, warehouse: Warehouse, day: str, exported: pa.ChunkedArray, banding, min_confidence: float
) -> int:
    """The day's exported samples' signatures, as `sft_records` stored them for the later days."""
    sample_ids: list[str] = []
    signatures = [np.zeros((0, near_duplicates.NUM_PERM), dtype=np.uint32)]
    for group in row_groups(warehouse.table_dir("annotated_samples"), day):
        batch = group.read(near_duplicates.SIGNATURE_COLUMNS)
        batch = batch.filter(pc.is_in(batch.column("sample_id"), value_set=exported))
        ids, signature = near_duplicates.batch_signatures(batch, min_confidence)
        sample_ids += ids
        signatures.append(signature)
    signature = np.concatenate(signatures)
    near.replace_day(day, sample_ids, signature, near_duplicates.band_keys(signature, banding))
    return len(sample_ids)
