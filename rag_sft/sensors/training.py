"""The training sensor: once N new exported samples exist, request `lora_training_job`.

It folds the event log into its ledger by storage-id watermark (no asset sensor), counts new
samples by sample_id, lets `core.trigger.decide` choose, and keys each request by the dataset
and attempt, so Dagster launches it once. The ledger, the sample_ids and what was trained on
live in the training ledger (`io/state/training_ledger.py`); the cursor keeps only the watermarks and the
pending dataset.
"""

import json
import os
from collections import Counter
from collections.abc import Mapping

import dagster as dg
import msgspec

from rag_sft import settings
from rag_sft.assets.training import DATASET_TAG, NAIVE_OPT_IN, lora_adapter, model_evaluation, training_dataset
from rag_sft.core import corrections, trigger
from rag_sft.io.registry.corrections import read_corrections
from rag_sft.io.state.export_ledger import update_ledger
from rag_sft.io.state.training_ledger import TrainingLedger, trained_sample_ids
from rag_sft.io.storage.location import open_lines
from rag_sft.jobs import executor_choice, training_executor
from rag_sft.resources import LoraTraining, Warehouse

TRAINING_JOB = "lora_training_job"

# Training runs where the GPU is. On Celery its steps go to a queue of their own
# (RAG_SFT_TRAINING_QUEUE, rag_sft/settings.py) that the GPU machine's worker takes. On Kubernetes the
# K8sRunLauncher (deploy/k8s) gives the run's pod these settings: one GPU, on nodes labelled
# rag-sft/pool=gpu (tainted for GPU work); the whole run (dataset snapshot, training,
# evaluation) is that pod. Other run launchers ignore the tag.
GPU_POD_TAG = "dagster-k8s/config"
GPU_POD = {
    "container_config": {"resources": {"limits": {"nvidia.com/gpu": "1"}, "requests": {"cpu": "4", "memory": "32Gi"}}},
    "pod_spec_config": {
        "node_selector": {"rag-sft/pool": "gpu"},
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
    },
}

# Every training run carries it: the PostgreSQL instance file and the Helm values let one such
# run go at a time (versions and the registry are written under host-local locks).
TRAINING_RUN_TAG = "rag_sft/training"



def training_tags(executor: str, environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """The training job's tags: the GPU pod settings only where Kubernetes runs it (the k8s
    executor, or a code server inside a cluster, which sets KUBERNETES_SERVICE_HOST in every
    pod); a local set-up's runs carry no Kubernetes tag that nothing reads."""
    on_kubernetes = executor == "k8s" or bool(environ.get("KUBERNETES_SERVICE_HOST"))
    return {**({GPU_POD_TAG: json.dumps(GPU_POD)} if on_kubernetes else {}), TRAINING_RUN_TAG: "lora"}


lora_training_job = dg.define_asset_job(
    TRAINING_JOB,
    selection=dg.AssetSelection.assets(training_dataset, lora_adapter, model_evaluation),
    description="Snapshot the exportable days, train a LoRA adapter, evaluate it and gate its promotion.",
    tags=training_tags(executor_choice()),
    executor_def=training_executor(executor_choice(), settings.TRAINING_QUEUE.value()),
)


@dg.sensor(
    job=lora_training_job,
    default_status=dg.DefaultSensorStatus.RUNNING,
    # Seconds between the daemon's evaluations, read when the definitions load.
    minimum_interval_seconds=settings.SENSOR_INTERVAL_S.value(),
    # The environment's N, read when the definitions load; a launchpad value of lora_training wins in the runs.
    description=f"Requests lora_training_job when the exportable days of the training window hold "
    f"{settings.MIN_NEW_SAMPLES.value():,} samples not trained on yet (lora_training.min_new_samples, "
    f"${settings.MIN_NEW_SAMPLES.variable}).",
)
def lora_training_sensor(context: dg.SensorEvaluationContext, lora_training: LoraTraining, warehouse: Warehouse):
    cursor = trigger.Cursor.from_json(context.cursor)
    pending = cursor.pending
    statuses = _run_statuses(context.instance, pending)
    with warehouse.open_state(TrainingLedger) as store, store.transaction():
        ledger = update_ledger(context.instance, store.export_ledger(cursor.after))
        store.save(ledger)
        exportable = ledger.exportable()
        unsettled = store.refresh_samples(exportable, warehouse.jsonl_path)
        if trigger.was_trained(statuses):
            store.mark_trained(trained_sample_ids(warehouse.versions_dir(), pending))
            pending, statuses = "", []
        window = trigger.training_window(exportable, lora_training.last_days)
        new = trigger.count_new(store.untrained_by_day(), window, exportable)
    if unsettled:
        decision = trigger.Skip(
            f"the JSONL of {', '.join(unsettled)} is not the file its latest sft_jsonl materialization published "
            "(re-exported while it was read, or changed by hand); waiting for them to match"
        )
    else:
        decision = trigger.decide(
            window,
            new,
            exportable_days=len(exportable),
            pending=pending,
            pending_statuses=statuses,
            last_days=lora_training.last_days,
            min_new_samples=lora_training.min_new_samples,
            max_attempts=lora_training.max_attempts,
        )
    if isinstance(decision, trigger.Request):
        decision = _something_to_train_on(decision, warehouse, lora_training.train_on_naive_completions)
    # A request supersedes a pending dataset that never trained.
    requested = decision.dataset_hash if isinstance(decision, trigger.Request) else pending
    context.update_cursor(trigger.Cursor(ledger.after, requested).to_json())
    if isinstance(decision, trigger.Skip):
        context.log.info(decision.reason)  # the tick's logs show it too, not only the status tooltip
        return dg.SkipReason(decision.reason)
    context.log.info(f"{decision.new_samples} new samples: training on {len(decision.days)} days ({decision.run_key})")
    return dg.RunRequest(
        run_key=decision.run_key,
        run_config={"ops": {"training_dataset": {"config": {"days": decision.days}}}},
        tags={DATASET_TAG: decision.dataset_hash, "rag_sft/new_samples": str(decision.new_samples)},
    )


class _Completion(msgspec.Struct):  # a JSONL record: only what says whether it may be trained on
    sample_id: str
    completion_strategy: str | None = None


_COMPLETION = msgspec.json.Decoder(_Completion)


def _something_to_train_on(request: trigger.Request, warehouse: Warehouse, train_on_naive: bool) -> trigger.Request | trigger.Skip:
    """The request, or a skip when no record of its days may be trained on (naive completions
    only, with no opt-in): training would fail on an empty dataset, or teach the wrong answers.
    Read only when the threshold is met, and stopped at the first trainable record."""
    human_corrections = read_corrections(warehouse.corrections_dir())
    strategies = Counter()
    for day in request.days:
        with open_lines(warehouse.jsonl_path(day)) as lines:
            for line in lines:
                if not line.strip():
                    continue
                record = _COMPLETION.decode(line)
                strategy = corrections.HUMAN if record.sample_id in human_corrections else record.completion_strategy
                if corrections.can_train(strategy, train_on_naive):
                    return request
                strategies[strategy] += 1
    return trigger.Skip(f"{request.new_samples} new samples, but {corrections.nothing_to_train_on(strategies, NAIVE_OPT_IN)}")


def _run_statuses(instance: dg.DagsterInstance, dataset: str) -> list[str]:
    """The statuses of the runs launched for a dataset (re-executions keep its tag), oldest first."""
    if not dataset:
        return []
    runs = instance.get_runs(filters=dg.RunsFilter(tags={DATASET_TAG: dataset}), ascending=True)
    return [run.status.value for run in runs]
