"""The checks that gate a day's export, declared on the assets that emit them (`check_specs`).

Confidence and label balance run inside `sft_records`, export format inside `sft_jsonl`; all
three are blocking, so a failure at ERROR stops the day's export and fails the run.
"""

from __future__ import annotations

import dagster as dg

from rag_sft.core import checks

CONFIDENCE = dg.AssetCheckSpec(
    checks.CONFIDENCE,
    asset="sft_records",
    blocking=True,
    description="Every exported record has confidence >= min_confidence; warns when more than "
    "max_filtered_share of accepted events were filtered for low confidence.",
)
LABEL_BALANCE = dg.AssetCheckSpec(
    checks.LABEL_BALANCE,
    asset="sft_records",
    blocking=True,
    description="No label above max_label_share of the exported records and the most / least frequent label "
    "ratio at most max_imbalance_ratio (days under min_records_for_balance are not judged).",
)
EXPORT_FORMAT = dg.AssetCheckSpec(
    checks.EXPORT_FORMAT,
    asset="sft_jsonl",
    blocking=True,
    description="Every JSONL line parses, has the record fields with their types, a non-empty prompt and "
    "completion, the question inside the prompt and the partition's date.",
)


def hold_back(context: dg.AssetExecutionContext, warehouse, verdicts: list[checks.Verdict]) -> str:
    """Remove the day's exports because of `verdicts` (failed at ERROR), say so in the run's
    log, and return the reasons."""
    day = context.partition_key
    withdrawn = warehouse.withdraw_exports(day)
    reasons = "; ".join(verdict.description for verdict in verdicts)
    context.log.error(f"{day} is held back from export: {reasons}" + (f" (removed {', '.join(withdrawn)})" if withdrawn else ""))
    return reasons


def check_result(verdict: checks.Verdict) -> dg.AssetCheckResult:
    severity = dg.AssetCheckSeverity.ERROR if verdict.severity == checks.ERROR else dg.AssetCheckSeverity.WARN
    return dg.AssetCheckResult(
        check_name=verdict.check,
        passed=verdict.passed,
        severity=severity,
        description=verdict.description,
        metadata={"verdict": verdict.description, **{key: _metadata_value(value) for key, value in verdict.metadata.items()}},
    )


def _metadata_value(value) -> dg.MetadataValue:
    if isinstance(value, list) and value and all(isinstance(row, dict) for row in value):
        columns = [dg.TableColumn(name, _column_type(value[0][name])) for name in value[0]]
        return dg.MetadataValue.table(records=[dg.TableRecord(row) for row in value], schema=dg.TableSchema(columns=columns))
    if isinstance(value, (dict, list)):
        return dg.MetadataValue.json(value)
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
