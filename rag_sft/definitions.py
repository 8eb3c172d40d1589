"""The Dagster code location: `dagster dev -m rag_sft.definitions` or workspace.yaml."""

import dagster as dg

from rag_sft.assets.export import sft_jsonl
from rag_sft.assets.ingest import raw_events
from rag_sft.assets.samples import annotated_samples, sft_records
from rag_sft.assets.training import lora_adapter, model_evaluation, training_dataset
from rag_sft.assets.versions import sft_dataset_version
from rag_sft.resources import default_resources
from rag_sft.sensors.training import lora_training_job, lora_training_sensor

DAILY_JOB = "daily_sft_job"

daily_sft_job = dg.define_asset_job(
    DAILY_JOB,
    selection=dg.AssetSelection.assets(raw_events, annotated_samples, sft_records, sft_jsonl),
    description="One day from quality events to the SFT JSONL.",
)

defs = dg.Definitions(
    assets=[
        raw_events,
        annotated_samples,
        sft_records,
        sft_jsonl,
        sft_dataset_version,
        training_dataset,
        lora_adapter,
        model_evaluation,
    ],
    jobs=[daily_sft_job, lora_training_job],
    sensors=[lora_training_sensor],
    resources=default_resources(),
)
