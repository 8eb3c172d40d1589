"""The export ledger brought up to date from the Dagster event log, by storage-id cursor."""

from __future__ import annotations

from collections import Counter
from datetime import date, timedelta

import dagster as dg
from dagster._core.event_api import PartitionKeyFilter
from dagster._core.storage.asset_check_execution_record import COMPLETED_ASSET_CHECK_EXECUTION_RECORD_STATUSES

from rag_sft.core import checks
from rag_sft.core.trigger import WITHDRAWN, ExportLedger

_PAGE = 1000
SFT_RECORDS = dg.AssetKey("sft_records")
EXPORT_CHECKS = [
    dg.AssetCheckKey(SFT_RECORDS, checks.CONFIDENCE),
    dg.AssetCheckKey(SFT_RECORDS, checks.LABEL_BALANCE),
    dg.AssetCheckKey(dg.AssetKey("sft_jsonl"), checks.EXPORT_FORMAT),
]

# The `export` entry of sft_records' metadata: "ok", or "held back: <the failed checks' descriptions>".
_EXPORT_OK = "ok"
_HELD_BACK = "held back: "


def export_status(hold_back_reasons: str) -> str:
    """The `export` entry for a day held back for these reasons ("" when it was not)."""
    return _HELD_BACK + hold_back_reasons if hold_back_reasons else _EXPORT_OK


def _hold_back_reasons(metadata) -> str:
    export = _value(metadata.get("export"), _EXPORT_OK)
    return "" if export == _EXPORT_OK else export.removeprefix(_HELD_BACK)


def hold_back_reasons(instance: dg.DagsterInstance, day: str) -> str:
    """Why the day's latest `sft_records` evaluation held it back; "" when it did not (or when
    the day has none on this instance)."""
    latest = dg.AssetRecordsFilter(asset_key=SFT_RECORDS, asset_partitions=[day])
    result = instance.fetch_materializations(latest, limit=1)
    return next((_hold_back_reasons(record.asset_materialization.metadata) for record in result.records), "")


def trailing_label_counts(instance: dg.DagsterInstance, day: str, days: int) -> tuple[Counter, int]:
    """What the `days` days before `day` exported of each label, from each one's latest
    `sft_records` materialization (a held-back day exported none), and how many of those days
    have one on this instance."""
    counts: Counter = Counter()
    seen = 0
    first = date.fromisoformat(day)
    for back in range(1, days + 1):
        earlier = (first - timedelta(days=back)).isoformat()
        latest = dg.AssetRecordsFilter(asset_key=SFT_RECORDS, asset_partitions=[earlier])
        for record in instance.fetch_materializations(latest, limit=1).records:
            seen += 1
            counts.update(_value(record.asset_materialization.metadata.get("label_counts"), {}))
    return counts, seen


def update_ledger(instance: dg.DagsterInstance, ledger: ExportLedger) -> ExportLedger:
    """Fold in every `sft_records` and `sft_jsonl` materialization newer than the ledger, and
    every withdrawal: the observation of `sft_jsonl` (`published: false`) that a held-back day's
    failed step leaves, so an earlier publication of that day stops counting."""
    while True:
        result = instance.fetch_observations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey("sft_jsonl"), after_storage_id=ledger.after.get(WITHDRAWN)),
            limit=_PAGE,
            ascending=True,
        )
        for record in result.records:
            if not _value(record.asset_observation.metadata.get("published"), True):
                ledger.saw_withdrawal(record.storage_id, record.partition_key)
        if not result.has_more:
            break
    for asset in ("sft_records", "sft_jsonl"):
        while True:
            result = instance.fetch_materializations(
                dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), after_storage_id=ledger.after.get(asset)),
                limit=_PAGE,
                ascending=True,
            )
            for record in result.records:
                metadata = record.asset_materialization.metadata
                day = record.partition_key
                if asset == "sft_records":
                    ledger.saw_records(record.storage_id, day, not _hold_back_reasons(metadata))
                else:
                    ledger.saw_jsonl(
                        record.storage_id,
                        day,
                        _value(metadata.get("sha256"), ""),
                        int(_value(metadata.get("dagster/row_count"), 0)),
                        bool(_value(metadata.get("published"), False)),
                    )
            if not result.has_more:
                break
    return ledger


def _value(entry, default):
    return default if entry is None else entry.value


def day_checks(instance: dg.DagsterInstance, day: str) -> dict[str, str]:
    """The outcome of each export check's latest evaluation on the day."""
    outcomes: dict[str, str] = {}
    for key in EXPORT_CHECKS:
        history = instance.event_log_storage.get_asset_check_execution_history(
            key, limit=1, status=COMPLETED_ASSET_CHECK_EXECUTION_RECORD_STATUSES, partition_filter=PartitionKeyFilter(key=day)
        )
        for record in history:
            evaluation = record.evaluation
            outcomes[key.name] = checks.outcome(evaluation.passed, evaluation.severity.value, evaluation.description or "")
    return dict(sorted(outcomes.items()))
