import os

import dagster as dg

START_DATE_ENV = "RAG_SFT_START_DATE"

# One daily UTC partitioning for every asset. end_offset=1 makes today's (still growing)
# partition materializable, so no landed event is ever out of reach.
daily_partitions = dg.DailyPartitionsDefinition(
    start_date=os.environ.get(START_DATE_ENV, "2025-01-01"), timezone="UTC", end_offset=1
)
