"""Steps executed by Celery workers (deploy/celery/README.md): `dagster dev` over the PostgreSQL
instance, the daily job on the dagster-celery executor with a Redis broker (both servers from
the project's wheels), the warehouse on the tests' S3 server, workers started in empty working
directories of their own. A 7-day backfill on one worker, then the same 7 days again with a
second worker: every run succeeds, every day reconciles, the steps ran in the workers, the
re-run is byte-identical. The wall times of both backfills are printed (`-s`) for the README."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import fsspec
import pytest

from rag_sft.io.storage import location
from rag_sft_tests.deploy.test_production_setup import (
    EVENTS_PER_DAY,
    REPO,
    _assert_reconciles,
    _day_counts,
    backfill,
    postgres_home,
    running_dagster_dev,
    write_sample_days,
)

DAYS = [f"2026-11-0{n}" for n in range(1, 8)]
WORKER_CONFIG = REPO / "deploy" / "celery" / "worker.yaml"


@pytest.fixture(scope="module")
def data_location(s3_server) -> str:
    """Where every worker reads and writes: a prefix on the tests' S3 server, so the workers
    share no data on disk."""
    return s3_server.uri(f"celery-{os.getpid()}")


@pytest.fixture(scope="module")
def deployment(postgres, redis, s3_server, data_location, tmp_path_factory):
    root = tmp_path_factory.mktemp("celery")
    home, landing = postgres_home(root), root / "landing"
    write_sample_days(landing, DAYS, EVENTS_PER_DAY)
    variables = {
        **postgres.env(postgres.create_database("dagster_celery")),
        **s3_server.env(),
        # The state's shared-truth files (request and near-duplicate indexes) have one copy on one
        # machine, as on a cluster until they move to a shared database (README, "Object storage").
        "RAG_SFT_STATE_DIR": str(root / "state"),
        "DAGSTER_HOME": str(home),
        "RAG_SFT_EXECUTOR": "celery",
        "RAG_SFT_CELERY_BROKER": redis.url(),
        "RAG_SFT_DATA_DIR": data_location,
        "RAG_SFT_LANDING_DIR": str(landing),
        "RAG_SFT_AUTOMATION": "off",  # the backfills are the subject
        "RAG_SFT_MIN_NEW_SAMPLES": "1000000",  # no training run competes for the 2 cores
    }
    with running_dagster_dev(root, home, location(data_location), landing, variables) as product:
        yield product, variables, root


@contextmanager
def celery_worker(root: Path, name: str, variables: dict) -> Iterator[Path]:
    """`dagster-celery worker start` as deploy/celery/README.md says, in an empty working
    directory, with a DAGSTER_HOME of its own; yields that working directory once it is ready."""
    cwd, log = root / f"{name}-cwd", root / f"{name}.log"
    cwd.mkdir()
    home = postgres_home(root / name)
    command = [str(Path(sys.executable).with_name("dagster-celery")), "worker", "start", "-A", "dagster_celery.app",
               "-y", str(WORKER_CONFIG), "-n", name, "--", "--pool", "solo", "--concurrency", "1"]  # fmt: skip
    # The venv's bin first: the CLI starts `celery` by name.
    env = {**os.environ, **variables, "DAGSTER_HOME": str(home), "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
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


def test_seven_days_on_one_worker_then_again_on_two_reconcile_and_are_byte_identical(deployment, data_location):
    product, variables, root = deployment
    with celery_worker(root, "w1", variables) as first_cwd:
        records, one_worker_s = backfill_all_days(product)
        assert_every_day_succeeded_and_reconciles(product, records)
        steps = {r.dagster_run.run_id: workers_of(product.instance, r.dagster_run.run_id) for r in records}
        assert all(worker.startswith("w1@") for by_step in steps.values() for worker in by_step.values())
        assert all(len(by_step) == 4 for by_step in steps.values()), steps  # ingest, annotate, records, export
        first = published_files(data_location)
        assert sum(path.endswith("records.jsonl") for path in first) == len(DAYS)

        with celery_worker(root, "w2", variables) as second_cwd:
            records, two_workers_s = backfill_all_days(product)
        assert_every_day_succeeded_and_reconciles(product, records)
        used = {w.split("@")[0] for r in records for w in workers_of(product.instance, r.dagster_run.run_id).values()}
        assert used == {"w1", "w2"}
        assert published_files(data_location) == first  # the re-run of every day, byte for byte

    # Nothing was read from or written to the workers' working directories.
    assert list(first_cwd.iterdir()) == [] and list(second_cwd.iterdir()) == []
    print(f"\n7-day backfill: 1 worker {one_worker_s:.1f} s, 2 workers {two_workers_s:.1f} s")
