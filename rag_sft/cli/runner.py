"""Materialize days through Dagster on a persistent instance and summarize what happened."""

from __future__ import annotations

import os
import re
import socket
from dataclasses import dataclass, field
from datetime import date
from typing import TYPE_CHECKING

import dagster as dg

from rag_sft.assets.partitions import daily_partitions
from rag_sft.checks.export_gate import is_held_back
from rag_sft.io.storage.location import location

if TYPE_CHECKING:
    from dagster_shared.error import SerializableErrorInfo


@dataclass
class DayReport:
    day: str
    success: bool
    counts: dict[str, int] = field(default_factory=dict)
    paths: dict[str, str] = field(default_factory=dict)
    failure: str | None = None
    held_back: list[str] = field(default_factory=list)  # checks that failed at ERROR: why no JSONL
    warnings: list[str] = field(default_factory=list)  # checks that failed at WARN
    llm_model: str | None = None  # the model that corrected the answers (llm strategy)
    earlier_jsonl: str | None = None  # a failed day's JSONL from an earlier run, still in place

    @property
    def status(self) -> str:
        if self.held_back and not self.failure:
            return "held back"
        if not self.success:
            return "FAILED"
        return "warned" if self.warnings else "ok"


# asset -> {metadata key: the summary's count}
_COUNT_KEYS = {
    "raw_events": {key: key for key in ("events_read", "duplicates", "rejected")},
    "sft_records": {key: key for key in ("exported", "filtered", "held_back", "completion_failed")},
    # Triage (docs/retriever.md): where each accepted event went, and what retrieval faults gave.
    "annotated_samples": {f"route/{route}": route for route in ("generation", "retrieval", "both", "review")},
    "embedding_pairs": {"dagster/row_count": "pairs", "retrieval_gaps": "gaps"},
}


_LLM_KEYS = ("llm_requests", "llm_cache_hits")

# The summary reports every outcome (held-back days and failures with their reasons); the full
# logs stay in the instance, for `make ui`.
QUIET_RUN_CONFIG = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}

# Runs executed in the command's own process carry it, so that a later command can fail those
# whose process was killed: no run launcher started them, so Dagster's monitoring cannot.
RUN_PROCESS_TAG = "rag_sft/process"


def process_tags() -> dict[str, str]:
    """The tag naming this process (host and pid) for a run executed in it."""
    return {RUN_PROCESS_TAG: f"{socket.gethostname()}:{os.getpid()}"}


def fail_runs_of_dead_processes(instance: dg.DagsterInstance) -> list[str]:
    """Mark FAILURE the unfinished runs executed in a process of this host that no longer exists
    (e.g. `make run` killed with kill -9); their ids."""
    host = socket.gethostname()
    failed = []
    unfinished = [dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING]
    for run in instance.get_runs(dg.RunsFilter(statuses=unfinished)):
        run_host, _, pid = run.tags.get(RUN_PROCESS_TAG, "").rpartition(":")
        if run_host == host and pid.isdigit() and not _process_exists(int(pid)):
            instance.report_run_failed(run, f"the process that executed this run (pid {pid}) is gone")
            failed.append(run.run_id)
    return failed


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def materialize_day(
    job: dg.JobDefinition, day: str, instance: dg.DagsterInstance, run_config: dict | None = None, tags: dict | None = None
) -> DayReport:
    """`tags`: the run's tags; the source fingerprint there tells the change sensor the day is done."""
    result = job.execute_in_process(
        partition_key=day,
        instance=instance,
        raise_on_error=False,
        run_config=run_config or QUIET_RUN_CONFIG,
        tags={**process_tags(), **(tags or {})},
    )
    report = DayReport(day=day, success=result.success)
    for event in result.get_asset_materialization_events():
        materialization = event.event_specific_data.materialization
        asset = materialization.asset_key.to_user_string()
        metadata = materialization.metadata
        for key, name in _COUNT_KEYS.get(asset, {}).items():
            if key in metadata:
                report.counts[name] = int(metadata[key].value)
        for key in _LLM_KEYS:
            if key in metadata:
                report.counts[key] = int(metadata[key].value)
        if "llm_model" in metadata:
            report.llm_model = str(metadata["llm_model"].value)
        if "path" in metadata:
            report.paths[asset] = str(metadata["path"].value)
    for evaluation in result.get_asset_check_evaluations():
        if not evaluation.passed:
            blocking = evaluation.severity == dg.AssetCheckSeverity.ERROR
            (report.held_back if blocking else report.warnings).append(evaluation.description or evaluation.check_name)
    # A day held back fails its sft_jsonl step on purpose: that failure is the gate working,
    # reported as held back; any other is a crash (docs/checks.md, "Held back: failed, on purpose").
    failures = _step_failures(result)
    held_back = [event for event in failures if is_held_back(event.event_specific_data.user_failure_data)]
    if held_back and not report.held_back:  # sft_jsonl alone: the reason is in the failure
        report.held_back = [str(event.event_specific_data.user_failure_data.description) for event in held_back]
    if not result.success and (len(held_back) < len(failures) or not held_back):
        report.failure = "; ".join(step_failure_messages(result, but=held_back)) or "run failed"
        report.earlier_jsonl = published_jsonl(instance, day)
    return report


def _step_failures(result: dg.ExecuteInProcessResult) -> list:
    return [event for event in result.all_events if event.is_step_failure and event.event_specific_data]


def published_jsonl(instance: dg.DagsterInstance, day: str) -> str | None:
    """The day's JSONL as the latest run that wrote it published it, if the file is still there
    (a run that fails before `sft_jsonl` leaves it in place; a held-back day removes it)."""
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("sft_jsonl"), asset_partitions=[day]), limit=1
    ).records
    path = records[0].asset_materialization.metadata.get("path") if records else None
    return str(path.value) if path is not None and location(str(path.value)).is_file() else None


def step_failure_messages(result: dg.ExecuteInProcessResult, but: list | None = None) -> list[str]:
    """Why the run's steps failed (those in `but` left out)."""
    return [
        error_with_causes(event.event_specific_data.error)
        for event in _step_failures(result)
        if event.event_specific_data.error and event not in (but or [])
    ]


def error_with_causes(error: SerializableErrorInfo) -> str:
    """An error's message followed by those of its causes: Dagster wraps the error that stopped a
    step (a full disk, a read-only folder) in one that only names the op."""
    messages = []
    link: SerializableErrorInfo | None = error
    while link is not None:
        # "dagster._core.errors.DagsterExecutionStepExecutionError: ..." -> "DagsterExecutionStepExecutionError: ..."
        messages.append(re.sub(r"^[\w.]+\.(\w+: )", r"\1", link.message.strip()).rstrip(":"))
        link = link.cause or link.context
    return ": ".join(messages)


def partition_days(days: list[date]) -> tuple[list[str], list[str]]:
    """Split days into those the partitioning covers and those outside its range."""
    keys = set(daily_partitions.get_partition_keys())
    inside = [d.isoformat() for d in sorted(days) if d.isoformat() in keys]
    outside = [d.isoformat() for d in sorted(days) if d.isoformat() not in keys]
    return inside, outside


def _table(title: str, reports: list[DayReport], columns: list[tuple[str, str, int]]) -> list[str]:
    header = f"{'day':<12}" + "".join(f"{heading:>{width}}" for _, heading, width in columns)
    lines = [title + ":", header]
    lines += [f"{r.day:<12}" + "".join(f"{r.counts.get(key, 0):>{width}}" for key, _, width in columns) for r in reports]
    return lines


def format_summary(reports: list[DayReport]) -> str:
    columns = [("events_read", "read", 9), ("exported", "exported", 10), ("filtered", "filtered", 10),
               ("held_back", "held back", 11), ("duplicates", "duplicate", 11), ("rejected", "rejected", 10)]
    header = f"{'day':<12}" + "".join(f"{title:>{width}}" for _, title, width in columns) + "  status"
    lines = [header, "-" * len(header)]
    totals = {key: 0 for key, _, _ in columns}
    for report in reports:
        for key in totals:
            totals[key] += report.counts.get(key, 0)
        lines.append(
            f"{report.day:<12}" + "".join(f"{report.counts.get(key, 0):>{width}}" for key, _, width in columns)
            + f"  {report.status}"
        )
    lines.append("-" * len(header))
    lines.append(f"{'total':<12}" + "".join(f"{totals[key]:>{width}}" for key, _, width in columns))
    triaged = [r for r in reports if any(route in r.counts for route in ("retrieval", "both", "review"))]
    if triaged:
        lines.append("")
        lines += _table(
            "Triage of the accepted events (docs/retriever.md): SFT takes generation and both; embedding pairs take "
            "retrieval and both (a fault with no positive passage is a retrieval gap)",
            triaged,
            [("generation", "generation", 12), ("retrieval", "retrieval", 11), ("both", "both", 6), ("review", "review", 8),
             ("pairs", "pairs", 7), ("gaps", "gaps", 6)],
        )  # fmt: skip
    held_back = [r for r in reports if r.held_back]
    if held_back:
        lines.append("")
        lines.append("Days held back from export by their checks (no JSONL; fix or set the check to WARN):")
        lines.extend(f"  {r.day}: {reason}" for r in held_back for reason in r.held_back)
    warned = [r for r in reports if r.warnings]
    if warned:
        lines.append("")
        lines.append("Check warnings (exported anyway):")
        lines.extend(f"  {r.day}: {warning}" for r in warned for warning in r.warnings)
    corrected = [r for r in reports if r.llm_model]
    if corrected:
        models = sorted({r.llm_model for r in corrected})
        lines.append("")
        lines.append(
            f"LLM corrections ({', '.join(models)}): {sum(r.counts.get('llm_requests', 0) for r in corrected)} requests, "
            f"{sum(r.counts.get('llm_cache_hits', 0) for r in corrected)} answers from the cache"
        )
    uncorrected = [r for r in reports if r.counts.get("completion_failed")]
    if uncorrected:
        lines.append("")
        lines.append("Samples the LLM did not correct (counted as filtered, asked again on the next run):")
        lines.extend(f"  {r.day}: {r.counts['completion_failed']}" for r in uncorrected)
    failed = [r for r in reports if r.failure]
    if failed:
        lines.append("")
        lines.append("Days that failed:")
        lines.extend(f"  {r.day}: {r.failure}" for r in failed)
    lines.append("")
    lines.append("JSONL files:")
    for r in reports:
        if "sft_jsonl" in r.paths:
            lines.append(f"  {r.day}  {r.paths['sft_jsonl']}")
        elif r.earlier_jsonl:
            lines.append(f"  {r.day}  {r.earlier_jsonl}  (from an earlier run)")
    lines.append("Parquet partitions (Hive layout, read the table folder with pandas or DuckDB):")
    for asset in ("raw_events", "rejected_events", "annotated_samples", "sft_records"):
        written = [r for r in reports if asset in r.paths]
        if written:
            table_dir = location(written[0].paths[asset]).parent.parent
            lines.append(
                f"  {asset:<18} {table_dir}/date=…  ({len(written)} days: {written[0].day} .. {written[-1].day})"
            )
    return "\n".join(lines)
