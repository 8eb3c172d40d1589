"""The change sensor: late events re-materialize exactly the days they belong to.

Each tick asks the source which days changed since its watermark (the landing index's change
counter, or the SQL table's last id), keeps the watermark in the cursor with the few changed
days that have not closed yet, and requests a closed day whose fingerprint differs from the one
its latest run was launched for. Run keys are (day, fingerprint): a re-evaluated tick asks for
the same runs, which Dagster launches once.
"""

from datetime import UTC, date, datetime

import dagster as dg

from rag_sft import settings
from rag_sft.assets.partitions import daily_partitions
from rag_sft.core.automation import ChangeCursor, changed_days_to_request
from rag_sft.jobs import FINGERPRINT_TAG, daily_sft_job
from rag_sft.resources import EventSource, Warehouse
from rag_sft.schedules.daily import AUTOMATION_ON, LAG, latest_day_run


@dg.sensor(
    job=daily_sft_job,
    default_status=dg.DefaultSensorStatus.RUNNING if AUTOMATION_ON else dg.DefaultSensorStatus.STOPPED,
    minimum_interval_seconds=settings.SOURCE_SENSOR_INTERVAL_S.value(),
    description="Re-materializes a closed day when new or changed events arrive for it, and closed days that never ran.",
)
def source_change_sensor(context: dg.SensorEvaluationContext, event_source: EventSource, warehouse: Warehouse):
    cursor = ChangeCursor.from_json(context.cursor)
    source = event_source.open(warehouse.state_dir())
    changed, after = source.changes_after(cursor.after)
    keys = set(daily_partitions.get_partition_keys())
    days = {day for day in changed | {date.fromisoformat(d) for d in cursor.waiting} if day.isoformat() in keys}
    requests, later = changed_days_to_request(
        {day: source.fingerprint(day) for day in days},
        {day: latest_day_run(context.instance, day) for day in days},
        datetime.now(UTC),
        LAG,
    )
    context.update_cursor(ChangeCursor(after, [day.isoformat() for day in later]).to_json())
    if not requests:
        waiting = f"; {len(later)} changed days wait for their day to close" if later else ""
        reason = f"no closed day with new content{waiting}"
        context.log.info(reason)  # in the tick's logs, not only the status tooltip
        return dg.SkipReason(reason)
    for request in requests:
        context.log.info(f"{request.day}: new content, materializing ({request.run_key})")
    return [
        dg.RunRequest(partition_key=r.day.isoformat(), run_key=r.run_key, tags={FINGERPRINT_TAG: r.fingerprint})
        for r in requests
    ]
