"""The training sensor: once N new exported samples exist, request `lora_training_job`.

It reads the event log by storage-id cursor (no asset sensor), lets `core.trigger.decide`
choose, and keys each request by the dataset and attempt, so Dagster launches it once.
"""

import os

import dagster as dg

from rag_sft.assets.training import DATASET_TAG, lora_adapter, model_evaluation, training_dataset
from rag_sft.core import trigger
from rag_sft.io.export_ledger import update_ledger
from rag_sft.resources import LoraTraining

TRAINING_JOB = "lora_training_job"
# Seconds between the daemon's evaluations (read when the definitions load, like the resources).
SENSOR_INTERVAL_ENV = "RAG_SFT_SENSOR_INTERVAL_S"

lora_training_job = dg.define_asset_job(
    TRAINING_JOB,
    selection=dg.AssetSelection.assets(training_dataset, lora_adapter, model_evaluation),
    description="Snapshot the exportable days, train a LoRA adapter, evaluate it and gate its promotion.",
)


@dg.sensor(
    job=lora_training_job,
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=int(os.environ.get(SENSOR_INTERVAL_ENV, "30")),
    description="Requests lora_training_job when the exportable days hold N samples not trained on yet.",
)
def lora_training_sensor(context: dg.SensorEvaluationContext, lora_training: LoraTraining):
    state = trigger.TriggerState.from_cursor(context.cursor)
    update_ledger(context.instance, state.ledger)
    statuses = {
        dataset: [run.status.value for run in context.instance.get_runs(filters=dg.RunsFilter(tags={DATASET_TAG: dataset}))]
        for dataset in state.pending
    }
    decision, state = trigger.decide(
        state,
        statuses,
        last_days=lora_training.last_days,
        min_new_samples=lora_training.min_new_samples,
        max_attempts=lora_training.max_attempts,
    )
    context.update_cursor(state.to_cursor())
    if isinstance(decision, trigger.Skip):
        return dg.SkipReason(decision.reason)
    context.log.info(f"{decision.new_samples} new samples: training on {len(decision.days)} days ({decision.run_key})")
    return dg.RunRequest(
        run_key=decision.run_key,
        run_config={"ops": {"training_dataset": {"config": {"days": decision.days}}}},
        tags={DATASET_TAG: decision.dataset_hash, "rag_sft/new_samples": str(decision.new_samples)},
    )
