from datetime import UTC, date, datetime, timedelta

import dagster as dg

from rag_sft import settings

# One daily UTC partitioning for every asset. end_offset=1 makes today's (still growing)
# partition materializable, so no landed event is ever out of reach.
daily_partitions = dg.DailyPartitionsDefinition(
    start_date=settings.START_DATE.value(), timezone="UTC", end_offset=1
)


def event_days() -> tuple[date, date]:
    """The first and last day an event may have: the partitions' first day and tomorrow (UTC;
    a clock a little ahead is not an error). Events outside are rejected as
    `timestamp_out_of_range` on the day their neighbours give them."""
    return daily_partitions.start.date(), datetime.now(UTC).date() + timedelta(days=1)
