"""Steps executed by Celery workers (deploy/celery/README.md): `dagster dev` over the PostgreSQL
instance, the daily job on the dagster-celery executor with a Redis broker (both servers from
the project's wheels), the landing folder and the warehouse on the tests' S3 server, the shared
truth in a PostgreSQL state database, workers started in empty working directories with local
state folders of their own: they share no disk. A 7-day backfill on one worker, then the same 7
days again with a second worker: every run succeeds, every day reconciles, the steps ran in the
workers, the re-run is byte-identical, pandas and DuckDB read all days from the store. Then the training sensor, switched on as in the UI, fires
once; the training run's steps run in a third worker on the training queue (the GPU machine's),
and the model version lands in the object store. The wall times of both backfills are printed
(`-s`) for docs/production.md."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from unittest import mock

import dagster as dg
import fsspec
import pandas as pd
import pytest

from rag_sft.io.registry.model_registry import ModelRegistry
from rag_sft.io.storage.location import location
from rag_sft.sensors.training import TRAINING_JOB
from rag_sft_tests.assets.test_s3_warehouse import duckdb_on
from rag_sft_tests.deploy.test_production_setup import (
    EVENTS_PER_DAY,
    FINISHED,
    LOCATION,
    REPO,
    REPOSITORY,
    SENSOR,
    _assert_reconciles,
    _day_counts,
    backfill,
    postgres_home,
    running_dagster_dev,
    write_sample_days,
)
from rag_sft_tests.io.test_landing_s3 import upload

DAYS = [f"2026-11-0{n}" for n in range(1, 8)]
WORKER_CONFIG = REPO / "deploy" / "celery" / "worker.yaml"
TRAINING_QUEUE = "gpu"


@pytest.fixture(scope="module")
def data_location(s3_server) -> str:
    """Where every worker reads and writes: a prefix on the tests' S3 server, so the workers
    share no data on disk."""
    return s3_server.uri(f"celery-{os.getpid()}")


@pytest.fixture(scope="module")
def deployment(postgres, redis, s3_server, data_location, tmp_path_factory, tiny_base):
    root = tmp_path_factory.mktemp("celery")
    home, landing = postgres_home(root), s3_server.uri(f"celery-landing-{os.getpid()}")
    write_sample_days(root / "landing-files", DAYS, EVENTS_PER_DAY)
    with mock.patch.dict(os.environ, s3_server.env()):
        upload(root / "landing-files", landing)  # as a log shipper would
    variables = {
        **postgres.env(postgres.create_database("dagster_celery")),
        **s3_server.env(),
        # The shared truth (request and near-duplicate indexes, erasure ledger) in one database;
        # every process keeps its local state (caches, spool) in a folder of its own.
        "RAG_SFT_STATE_URL": postgres.url(postgres.create_database("rag_sft_state")),
        "RAG_SFT_STATE_DIR": str(root / "dagster-dev-state"),
        "DAGSTER_HOME": str(home),
        "RAG_SFT_EXECUTOR": "celery",
        "RAG_SFT_CELERY_BROKER": redis.url(),
        "RAG_SFT_TRAINING_QUEUE": TRAINING_QUEUE,
        "RAG_SFT_DATA_DIR": data_location,
        "RAG_SFT_LANDING_DIR": landing,
        "RAG_SFT_AUTOMATION": "off",  # the backfills are the subject
        "RAG_SFT_SENSOR_INTERVAL_S": "3",
        "RAG_SFT_BASE_MODEL": str(tiny_base),  # the base model is a local path on every machine, as a model cache
        # The sensor is switched on once all 7 days are in (~740 samples) and trains on the
        # latest (~105): where the steps run is the subject, not what 7 days teach the model.
        "RAG_SFT_MIN_NEW_SAMPLES": "50",
        # N is sized against every accepted sample reaching SFT; triage has its own tests.
        "RAG_SFT_TRIAGE": "false",
        "RAG_SFT_TRAIN_ON_NAIVE_COMPLETIONS": "1",  # the generated events\' completions are naive
        "RAG_SFT_TRAIN_LAST_DAYS": "1",
        "RAG_SFT_TRAIN_MAX_LENGTH": "96",
        "RAG_SFT_EVAL_QUESTIONS": "8",
        "RAG_SFT_TRAIN_LEARNING_RATE": "0.005",
    }
    with running_dagster_dev(root, home, location(data_location), location(landing), variables) as product:
        # Off until the backfills are done, as a user switches it in the UI: no training run
        # competes with them for the 2 cores.
        set_training_sensor(product, running=False)
        yield product, variables, root


SENSOR_SELECTOR = {"repositoryLocationName": LOCATION, "repositoryName": REPOSITORY, "sensorName": SENSOR}
SENSOR_STATE = "query($s: SensorSelector!) { sensorOrError(sensorSelector: $s) { ... on Sensor { sensorState { id status } } } }"
STOP_SENSOR = "mutation($id: String!) { stopSensor(id: $id) { __typename ... on StopSensorMutationResult { instigationState { status } } } }"
START_SENSOR = "mutation($s: SensorSelector!) { startSensor(sensorSelector: $s) { __typename ... on Sensor { sensorState { status } } } }"


def set_training_sensor(product, running: bool) -> None:
    """The training sensor switched on or off through GraphQL, as the UI's toggle does."""
    if running:
        started = product.graphql(START_SENSOR, {"s": SENSOR_SELECTOR})["startSensor"]
        assert started["sensorState"]["status"] == "RUNNING", started
        return
    state = product.graphql(SENSOR_STATE, {"s": SENSOR_SELECTOR})["sensorOrError"]["sensorState"]
    stopped = product.graphql(STOP_SENSOR, {"id": state["id"]})["stopSensor"]
    assert stopped["instigationState"]["status"] == "STOPPED", stopped


@contextmanager
def celery_worker(root: Path, name: str, variables: dict, queue: str | None = None) -> Iterator[Path]:
    """`dagster-celery worker start` as deploy/celery/README.md says, in an empty working
    directory, with a DAGSTER_HOME and a local state folder of its own; on `queue` when given
    (else Celery's default one); yields that working directory once it is ready."""
    cwd, log = root / f"{name}-cwd", root / f"{name}.log"
    cwd.mkdir()
    home = postgres_home(root / name)
    command = [str(Path(sys.executable).with_name("dagster-celery")), "worker", "start", "-A", "dagster_celery.app",
               "-y", str(WORKER_CONFIG), "-n", name, *(["-q", queue] if queue else []),
               "--", "--pool", "solo", "--concurrency", "1"]  # fmt: skip
    # The venv's bin first: the CLI starts `celery` by name.
    env = {**os.environ, **variables, "DAGSTER_HOME": str(home), "RAG_SFT_STATE_DIR": str(root / f"{name}-state"),
           "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}  # fmt: skip
    with log.open("wb") as log_file:
        worker = subprocess.Popen(command, cwd=cwd, env=env, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while b" ready." not in log.read_bytes():
            assert worker.poll() is None and time.monotonic() < deadline, f"worker {name} did not start:\n{log.read_text()[-3000:]}"
            time.sleep(0.5)
        yield cwd
    finally:
        os.killpg(worker.pid, signal.SIGTERM)  # Celery's warm shutdown
        try:
            worker.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait()


def backfill_all_days(product) -> tuple[list, float]:
    """The 7 days launched as a backfill through GraphQL; their run records once all finished,
    and the wall time from the launch to the last run's end."""
    launched_at = time.time()
    records = backfill(product, DAYS, timeout_s=600)
    return records, max(r.end_time for r in records) - launched_at


def workers_of(instance: dg.DagsterInstance, run_id: str) -> dict[str, str]:
    """Each step of the run and the Celery worker that executed it (the executor's engine event)."""
    steps = {}
    for entry in instance.all_logs(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT):
        if "Executing steps" in entry.message and entry.message.endswith("in celery worker"):
            metadata = entry.dagster_event.engine_event_data.metadata
            steps[entry.step_key] = metadata["Celery worker"].value
    return steps


def published_files(uri: str) -> dict[str, bytes]:
    """Every file of the daily exports and the warehouse tables, by path under the location."""
    fs, root = fsspec.core.url_to_fs(uri)
    found = {}
    for folder in ("datasets/sft", "warehouse/raw_events", "warehouse/rejected_events", "warehouse/sft_records"):
        for path in fs.find(f"{root}/{folder}"):
            if "/date=" in path:  # the partitions, not staging or bookkeeping
                found[path.removeprefix(root)] = fs.cat_file(path)
    return found


def assert_every_day_succeeded_and_reconciles(product, records) -> None:
    assert sorted(r.dagster_run.tags["dagster/partition"] for r in records) == DAYS
    assert {r.dagster_run.status.value for r in records} == {"SUCCESS"}
    for day in DAYS:
        _assert_reconciles(_day_counts(product.instance, day))


def test_seven_days_on_one_worker_then_again_on_two_reconcile_and_are_byte_identical(deployment, data_location, s3_server):
    product, variables, root = deployment
    with celery_worker(root, "w1", variables) as first_cwd:
        records, one_worker_s = backfill_all_days(product)
        assert_every_day_succeeded_and_reconciles(product, records)
        steps = {r.dagster_run.run_id: workers_of(product.instance, r.dagster_run.run_id) for r in records}
        assert all(worker.startswith("w1@") for by_step in steps.values() for worker in by_step.values())
        assert all(len(by_step) == 5 for by_step in steps.values()), steps  # ingest, annotate, pairs, records, export
        first = published_files(data_location)
        assert sum(path.endswith("records.jsonl") for path in first) == len(DAYS)

        with celery_worker(root, "w2", variables) as second_cwd:
            records, two_workers_s = backfill_all_days(product)
        assert_every_day_succeeded_and_reconciles(product, records)
        used = {w.split("@")[0] for r in records for w in workers_of(product.instance, r.dagster_run.run_id).values()}
        assert used == {"w1", "w2"}
        assert published_files(data_location) == first  # the re-run of every day, byte for byte

    # Analysts read all 7 days from the store, as from a local warehouse: pandas (s3fs) and DuckDB (httpfs).
    accepted = {day: _day_counts(product.instance, day)["sft_records"]["accepted"] for day in DAYS}
    frame = pd.read_parquet(f"{data_location}/warehouse/sft_records", storage_options=s3_server.storage_options())
    assert frame.groupby(frame["date"].astype(str)).size().to_dict() == accepted
    query = f"SELECT date, count(*) FROM read_parquet('{data_location}/warehouse/sft_records/*/*.parquet', hive_partitioning = true) GROUP BY date"
    assert {str(day): count for day, count in duckdb_on(s3_server).execute(query).fetchall()} == accepted

    # Nothing was read from or written to the workers' working directories, and no shared truth
    # was kept in a local state folder.
    assert list(first_cwd.iterdir()) == [] and list(second_cwd.iterdir()) == []
    assert not [path for path in root.glob("*state/*.sqlite") if "landing-index" not in path.name]
    print(f"\n7-day backfill: 1 worker {one_worker_s:.1f} s, 2 workers {two_workers_s:.1f} s")


def test_the_training_sensor_fires_once_and_the_model_version_lands_in_the_object_store(deployment, data_location):
    product, variables, root = deployment
    training_runs = dg.RunsFilter(job_name=TRAINING_JOB)
    with celery_worker(root, "gpu", variables, queue=TRAINING_QUEUE) as gpu_cwd:
        set_training_sensor(product, running=True)

        def trained():
            records = product.instance.get_run_records(filters=training_runs)
            return records if records and all(r.dagster_run.status.value in FINISHED for r in records) else None

        [record] = product.wait("the training run", trained, timeout_s=420, every_s=2)
        assert record.dagster_run.status.value == "SUCCESS", product.log.read_text()[-3000:]
        steps = workers_of(product.instance, record.dagster_run.run_id)
        assert set(steps) == {"training_dataset", "lora_adapter", "model_evaluation"}
        assert all(worker.startswith("gpu@") for worker in steps.values()), steps
        time.sleep(10)  # more ticks: nothing new was exported, so no second run
        assert len(product.instance.get_run_records(filters=training_runs)) == 1
    assert list(gpu_cwd.iterdir()) == []
    # The sensor's ledger is in the state database, not on the daemon's machine.
    assert not [path for path in root.glob("*state/*.sqlite") if "landing-index" not in path.name]

    [version] = ModelRegistry(location(data_location) / "models").versions()  # registered in the store
    fs, prefix = fsspec.core.url_to_fs(data_location)
    stored = {path.removeprefix(f"{prefix}/") for path in fs.find(f"{prefix}/models")}
    for key in ("adapter/adapter_config.json", "adapter/adapter_model.safetensors", "tokenizer/tokenizer_config.json"):
        assert f"models/{version['version']}/{key}" in stored, key
