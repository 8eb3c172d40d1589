"""The Dagster code location: `dagster dev -m rag_sft.definitions` or workspace.yaml."""

import dagster as dg

from rag_sft.assets.export import sft_jsonl
from rag_sft.assets.ingest import raw_events
from rag_sft.assets.pairs import embedding_pairs
from rag_sft.assets.samples import annotated_samples, sft_records
from rag_sft.assets.training import lora_adapter, model_evaluation, training_dataset
from rag_sft.assets.versions import sft_dataset_version
from rag_sft.erasure_job import erase_requests_job
from rag_sft.jobs import DAILY_JOB, daily_sft_job
from rag_sft.resources import default_resources
from rag_sft.schedules.daily import daily_sft_schedule
from rag_sft.sensors.source_changes import source_change_sensor
from rag_sft.sensors.training import lora_training_job, lora_training_sensor

__all__ = ["DAILY_JOB", "defs"]

defs = dg.Definitions(
    assets=[
        raw_events,
        annotated_samples,
        sft_records,
        sft_jsonl,
        embedding_pairs,
        sft_dataset_version,
        training_dataset,
        lora_adapter,
        model_evaluation,
    ],
    jobs=[daily_sft_job, lora_training_job, erase_requests_job],
    schedules=[daily_sft_schedule],
    sensors=[source_change_sensor, lora_training_sensor],
    resources=default_resources(),
)
