"""The daily job, shared by `make run`, the schedule and the change sensor."""

import dagster as dg

from rag_sft.assets.export import sft_jsonl
from rag_sft.assets.ingest import raw_events
from rag_sft.assets.samples import annotated_samples, sft_records

DAILY_JOB = "daily_sft_job"
# The source fingerprint a run was launched for: the change sensor compares it with the day's now.
FINGERPRINT_TAG = "rag_sft/source_fingerprint"

# In one process: the steps of a day form a chain (nothing to run side by side) and each one
# spreads its own work over the cores; a process per step cost ~5 s of start-up each.
daily_sft_job = dg.define_asset_job(
    DAILY_JOB,
    selection=dg.AssetSelection.assets(raw_events, annotated_samples, sft_records, sft_jsonl),
    description="One day from quality events to the SFT JSONL.",
    executor_def=dg.in_process_executor,
)
