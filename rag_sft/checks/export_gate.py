"""The checks that gate a day's export, declared on the assets that emit them (`check_specs`).

Confidence and the label-mix monitor (`label_balance`, WARN only) run inside `sft_records`, export
format inside `sft_jsonl`. Each
evaluation belongs to its day: the specs carry the daily partitions (a preview API in Dagster
1.13, and the only one that records a check result with its partition; without it the result
is stored without a partition beside a phantom "Skipped" row for the day, and a held-back day
turns green again after the next passing run).

The gate is the project's own, not Dagster's `blocking`: a blocking failure fails the step that
evaluates the check, so `sft_records` would publish nothing about the day (no counts, no
`held_back` rows) and `sft_jsonl` would never say why it is missing. Here a failure at ERROR
holds the day back: `sft_records` materializes the day's rows marked `held_back` with the
verdict, its exports are withdrawn, the run is tagged `rag_sft/held_back=<checks>` (and is never
retried by run retries), and `sft_jsonl` fails its step on purpose with a `dg.Failure` that
carries the reason (`held_back`): the day reads "Failed" wherever Dagster shows status (the
partitions bars, the catalog, the job's partitions, the runs list), since nothing was shipped
(docs/checks.md, "Held back: failed, on purpose").
"""

from __future__ import annotations

import warnings

import dagster as dg

from rag_sft.assets.metadata import percent
from rag_sft.assets.partitions import daily_partitions
from rag_sft.core import checks
from rag_sft.io.state.export_ledger import export_status

# Run tag of a held-back day's run: the checks that held it back (comma-separated).
HELD_BACK_TAG = "rag_sft/held_back"
# Dagster's run-retry switch: a held-back run fails on purpose and would fail the same way again.
_NO_RUN_RETRY = {"dagster/retry_on_asset_or_op_failure": "false"}
# The metadata entry of sft_jsonl's Failure that says the step failed because the day is held back.
HELD_BACK_BY = "held_back_by"
SFT_JSONL = dg.AssetKey("sft_jsonl")


def _daily_check(name: str, asset: str, description: str) -> dg.AssetCheckSpec:
    # Chosen knowingly (module docstring): the preview warning would repeat on every load.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.PreviewWarning)
        return dg.AssetCheckSpec(name, asset=asset, description=description, partitions_def=daily_partitions)


CONFIDENCE = _daily_check(
    checks.CONFIDENCE,
    "sft_records",
    "Every exported record has confidence >= min_confidence; warns when more than max_filtered_share of "
    "accepted events were filtered for low confidence. Failing at ERROR (confidence_severity) holds the day back: "
    "no JSONL, sft_jsonl fails the day on purpose and the run fails; at WARN the day is exported, flagged.",
)
LABEL_BALANCE = _daily_check(
    checks.LABEL_BALANCE,
    "sft_records",
    "A monitor, never a gate: the day's label mix against the trailing label_mix_days days'; warns when a label's "
    "share moved by more than max_label_mix_change (the evaluator or the service changed). Skewed traffic is "
    "exported whole: the training set caps it (train_label_balance).",
)
EXPORT_FORMAT = _daily_check(
    checks.EXPORT_FORMAT,
    "sft_jsonl",
    "Every JSONL line parses, has the record fields with their types, a non-empty prompt and completion, the "
    "question inside the prompt and the partition's date. Failing at ERROR (export_format_severity) holds the day "
    "back: the file is not published, the step and the run fail; at WARN it is published, flagged. Not evaluated "
    "on a day sft_records held back (its step fails before: Dagster shows the check's execution failed).",
)


def hold_back(context: dg.AssetExecutionContext, warehouse, verdicts: list[checks.Verdict]) -> str:
    """Remove the day's exports because of `verdicts` (failed at ERROR), say so in the run's
    log and tags, and return the reasons."""
    day = context.partition_key
    withdrawn = warehouse.withdraw_exports(day)
    reasons = "; ".join(verdict.description for verdict in verdicts)
    context.log.error(f"{day} is held back from export: {reasons}" + (f" (removed {', '.join(withdrawn)})" if withdrawn else ""))
    held_back_by = ",".join(dict.fromkeys([*_held_back_by(context.run.tags), *(verdict.check for verdict in verdicts)]))
    context.instance.add_run_tags(context.run.run_id, {HELD_BACK_TAG: held_back_by, **_NO_RUN_RETRY})
    return reasons


def not_published(context: dg.AssetExecutionContext, held_back_by: str, reasons: str) -> dg.Failure:
    """What `sft_jsonl` raises for a held-back day, once its exports are withdrawn: the record
    (an observation of `sft_jsonl`: nothing published, why) that the export ledger folds, so an
    earlier publication of the day no longer counts, and the Failure that makes the day read
    "Failed" (docs/checks.md, "Held back: failed, on purpose"). No retry: it would fail the same way."""
    day = context.partition_key
    context.instance.add_run_tags(context.run.run_id, {HELD_BACK_TAG: held_back_by, **_NO_RUN_RETRY})
    context.log_event(
        dg.AssetObservation(SFT_JSONL, partition=day, metadata={"published": False, "export": export_status(reasons)})
    )
    return dg.Failure(
        description=f"{day} is held back from export by {held_back_by}, on purpose: {reasons}. Nothing was published; "
        "re-materialize the day once it passes (or with the check's severity at WARN) to publish it.",
        metadata={
            HELD_BACK_BY: held_back_by,
            "published": False,
            "export": export_status(reasons),
            "dagster/row_count": 0,
        },
        allow_retries=False,
    )


def is_held_back(user_failure_data) -> bool:
    """Whether a step failure (its `user_failure_data`, None for a crash) is a day held back."""
    return user_failure_data is not None and HELD_BACK_BY in (user_failure_data.metadata or {})


def _held_back_by(tags) -> list[str]:
    return [name for name in tags.get(HELD_BACK_TAG, "").split(",") if name]


def check_result(verdict: checks.Verdict) -> dg.AssetCheckResult:
    severity = dg.AssetCheckSeverity.ERROR if verdict.severity == checks.ERROR else dg.AssetCheckSeverity.WARN
    return dg.AssetCheckResult(
        check_name=verdict.check,
        passed=verdict.passed,
        severity=severity,
        description=verdict.description,
        metadata={"verdict": verdict.description, **dict(_metadata_entry(key, value) for key, value in verdict.metadata.items())},
    )


def _metadata_entry(key: str, value) -> tuple[str, dg.MetadataValue]:
    """One verdict figure as a UI entry: shares as percentages (`…_share_pct`), counts by kind
    and per-label rows as tables, lists as bullet points, numbers as numbers (plottable)."""
    if key.endswith("share") and isinstance(value, float):
        return f"{key}_pct", dg.MetadataValue.float(percent(value))
    if isinstance(value, list) and value and all(isinstance(row, dict) for row in value):
        rows = [
            {_pct_key(name): (percent(cell) if name.endswith("share") and cell is not None else cell) for name, cell in row.items()}
            for row in value
        ]
        columns = [dg.TableColumn(name, _column_type(rows[0][name])) for name in rows[0]]
        return key, dg.MetadataValue.table(records=[dg.TableRecord(row) for row in rows], schema=dg.TableSchema(columns=columns))
    return key, _metadata_value(value)


def _pct_key(name: str) -> str:
    return f"{name}_pct" if name.endswith("share") else name


def _metadata_value(value) -> dg.MetadataValue:
    if isinstance(value, dict):
        return dg.MetadataValue.table(
            records=[dg.TableRecord({"name": str(name), "count": count}) for name, count in value.items()],
            schema=dg.TableSchema(columns=[dg.TableColumn("name", "string"), dg.TableColumn("count", "int")]),
        )
    if isinstance(value, list):
        return dg.MetadataValue.md("\n".join(f"- {item}" for item in value) or "none")
    if value is None:
        return dg.MetadataValue.null()
    if isinstance(value, bool):
        return dg.MetadataValue.bool(value)
    if isinstance(value, int):
        return dg.MetadataValue.int(value)
    if isinstance(value, float):
        return dg.MetadataValue.float(round(value, 6))
    return dg.MetadataValue.text(str(value))


def _column_type(sample) -> str:
    if isinstance(sample, bool):
        return "bool"
    if isinstance(sample, int):
        return "int"
    if isinstance(sample, float) or sample is None:
        return "float"
    return "string"
