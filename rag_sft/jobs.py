"""The daily job, shared by `make run`, the schedule and the change sensor."""

import dagster as dg

from rag_sft import settings

from rag_sft.assets.export import sft_jsonl
from rag_sft.assets.ingest import raw_events
from rag_sft.assets.pairs import embedding_pairs
from rag_sft.assets.samples import annotated_samples, sft_records

DAILY_JOB = "daily_sft_job"
# The source fingerprint a run was launched for: the change sensor compares it with the day's now.
FINGERPRINT_TAG = "rag_sft/source_fingerprint"
# settings.EXECUTOR, where the daily job's steps run: in_process (the default), celery
# (deploy/celery/README.md) or k8s (a pod per step; deploy/k8s, not run here). Read when the
# definitions load, so the schedule, the sensors and backfills all use it.


def executor_choice() -> str:
    return settings.EXECUTOR.value()


def daily_executor(choice: str) -> dg.ExecutorDefinition:
    # In one process by default: the steps of a day form a chain (nothing to run side by side)
    # and each one spreads its own work over the cores; a process per step cost ~5 s of
    # start-up each. On Celery, each step goes to whichever worker is free: the days of a
    # backfill spread over the workers' machines.
    if choice == "in_process":
        return dg.in_process_executor
    if choice == "celery":
        return _celery_executor("celery_executor", queue="")
    if choice == "k8s":
        from dagster_k8s import k8s_job_executor  # the `k8s` extra

        return k8s_job_executor
    raise ValueError(f"{settings.EXECUTOR.variable} must be in_process, celery or k8s, got {choice!r}")


def training_executor(choice: str, queue: str) -> dg.ExecutorDefinition | None:
    """On Celery, the training job's steps go to `queue` (all three: the snapshot, the training
    and the evaluation run where the GPU is). Elsewhere the job keeps Dagster's default executor:
    on Kubernetes the run is one pod on the GPU pool (its run launcher tag), locally a process."""
    return _celery_executor("celery_training_executor", queue) if choice == "celery" else None


def _celery_executor(name: str, queue: str) -> dg.ExecutorDefinition:
    """dagster-celery's executor (the `celery` extra) on the broker, which also carries the
    results back; its steps go to `queue`, empty: Celery's default queue."""
    from dagster_celery import celery_executor

    broker = {"env": settings.CELERY_BROKER.variable}
    config = {"broker": broker, "backend": broker}
    if queue:
        config["config_source"] = {"task_default_queue": queue}
    return celery_executor.configured(config, name=name)


daily_sft_job = dg.define_asset_job(
    DAILY_JOB,
    selection=dg.AssetSelection.assets(raw_events, annotated_samples, sft_records, sft_jsonl, embedding_pairs),
    description="One day from quality events to the SFT JSONL and the embedding pairs.",
    executor_def=daily_executor(executor_choice()),
)
