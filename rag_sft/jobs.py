"""The daily job, shared by `make run`, the schedule and the change sensor."""

import os

import dagster as dg

from rag_sft.assets.export import sft_jsonl
from rag_sft.assets.ingest import raw_events
from rag_sft.assets.pairs import embedding_pairs
from rag_sft.assets.samples import annotated_samples, sft_records
from rag_sft.resources import EXECUTOR_ENV

DAILY_JOB = "daily_sft_job"
# The source fingerprint a run was launched for: the change sensor compares it with the day's now.
FINGERPRINT_TAG = "rag_sft/source_fingerprint"
# RAG_SFT_EXECUTOR (EXECUTOR_ENV), where the daily job's steps run: in_process (the default),
# celery (deploy/celery/README.md) or k8s (a pod per step; deploy/k8s, not run here). Read when
# the definitions load, so the schedule, the sensors and backfills all use it.

# The Celery broker, e.g. redis://host:6379/0; it also carries the steps' results back.
CELERY_BROKER_ENV = "RAG_SFT_CELERY_BROKER"
# The Celery queue of the training job's steps: the queue that the worker on the GPU machine
# takes (`dagster-celery worker start -q gpu`); empty: Celery's default queue, as the daily job.
TRAINING_QUEUE_ENV = "RAG_SFT_TRAINING_QUEUE"


def executor_choice() -> str:
    return os.environ.get(EXECUTOR_ENV) or "in_process"


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
    raise ValueError(f"{EXECUTOR_ENV} must be in_process, celery or k8s, got {choice!r}")


def training_executor(choice: str, queue: str) -> dg.ExecutorDefinition | None:
    """On Celery, the training job's steps go to `queue` (all three: the snapshot, the training
    and the evaluation run where the GPU is). Elsewhere the job keeps Dagster's default executor:
    on Kubernetes the run is one pod on the GPU pool (its run launcher tag), locally a process."""
    return _celery_executor("celery_training_executor", queue) if choice == "celery" else None


def _celery_executor(name: str, queue: str) -> dg.ExecutorDefinition:
    """dagster-celery's executor (the `celery` extra) on the broker, which also carries the
    results back; its steps go to `queue`, empty: Celery's default queue."""
    from dagster_celery import celery_executor

    broker = {"env": CELERY_BROKER_ENV}
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
