"""The daily schedule: each UTC day is materialized once it has closed, after a lag for stragglers.

A schedule (not declarative automation) because the rule is a clock rule, one run per day with
a run key per day, visible and pausable in the UI's Schedules tab; content changes after that
are the change sensor's (`sensors/source_changes.py`).
"""

from datetime import date, timedelta

import dagster as dg

from rag_sft import settings
from rag_sft.assets.partitions import daily_partitions
from rag_sft.core.automation import LatestRun, day_closed_by, schedule_cron
from rag_sft.jobs import DAILY_JOB, FINGERPRINT_TAG, daily_sft_job
from rag_sft.resources import EventSource, Warehouse

# Read when the definitions load, like the other automation settings. "off" loads the schedule
# and the change sensor stopped (start them in the UI).
AUTOMATION_ON = settings.AUTOMATION.value()


def latest_day_run(instance: dg.DagsterInstance, day: date) -> LatestRun | None:
    """The latest run of the daily job for `day`, whoever launched it."""
    runs = instance.get_runs(
        filters=dg.RunsFilter(job_name=DAILY_JOB, tags={"dagster/partition": day.isoformat()}), limit=1
    )
    return LatestRun(runs[0].tags.get(FINGERPRINT_TAG)) if runs else None


LAG = settings.DAILY_LAG_MINUTES.value()


def _clock(lag: timedelta) -> str:
    minutes = int(lag.total_seconds()) // 60
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


@dg.schedule(
    job=daily_sft_job,
    cron_schedule=schedule_cron(LAG),
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING if AUTOMATION_ON else dg.DefaultScheduleStatus.STOPPED,
    description=f"Materializes each UTC day (the partition of daily_sft_job named by the day) once it has closed: "
    f"daily at {_clock(LAG)} UTC, midnight plus a {int(LAG.total_seconds()) // 60}-minute lag for stragglers "
    f"({settings.DAILY_LAG_MINUTES.variable}).",
)
def daily_sft_schedule(context: dg.ScheduleEvaluationContext, event_source: EventSource, warehouse: Warehouse):
    day = day_closed_by(context.scheduled_execution_time, LAG)
    if day.isoformat() not in daily_partitions.get_partition_keys():
        return dg.SkipReason(f"{day} is outside the partitions (RAG_SFT_START_DATE)")
    source = event_source.open(warehouse.state_dir())
    events = source.days_present().get(day, 0)  # brings the source's index up to date
    fingerprint = source.fingerprint(day)
    latest = latest_day_run(context.instance, day)
    if latest is not None and latest.fingerprint == fingerprint:
        return dg.SkipReason(f"{day} already ran on this content ({events} events)")
    # A day without events runs too: its partitions are materialized empty, not left missing.
    return dg.RunRequest(partition_key=day.isoformat(), run_key=day.isoformat(), tags={FINGERPRINT_TAG: fingerprint})
