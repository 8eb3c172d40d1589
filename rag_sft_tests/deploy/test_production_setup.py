"""The product as a team runs it: `dagster dev` (webserver and daemon) over an instance on a
real PostgreSQL server (the documented deploy/dagster-postgres.yaml), driven through its
GraphQL API: the code location, one partition, a 7-day backfill whose runs overlap, and the
training sensor firing once and only once while the days land."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from unittest import mock

import dagster as dg
import pandas as pd
import pytest

from rag_sft.core.generator import GeneratorSettings, day_lines
from rag_sft.testing.postgres_server import free_port

REPO = Path(__file__).resolve().parents[2]
LOCATION, REPOSITORY = "rag_sft", "__repository__"
DAYS = [f"2026-11-0{n}" for n in range(1, 9)]
# 8 days export ~840 samples: between 1x and 2x the sensor's N, so it fires once and only once
# (half the events and half the N of before: the same ratio, half the samples to train on).
EVENTS_PER_DAY = 150
MIN_NEW_SAMPLES = 500
SENSOR = "lora_training_sensor"
FINISHED = {"SUCCESS", "FAILURE", "CANCELED"}


@dataclass
class Product:
    port: int
    home: Path
    data: Path
    landing: Path
    instance: dg.DagsterInstance
    process: subprocess.Popen
    log: Path

    def graphql(self, query: str, variables: dict | None = None) -> dict:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/graphql",
            data=json.dumps({"query": query, "variables": variables or {}}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            answer = json.loads(response.read())
        assert "errors" not in answer, answer["errors"]
        return answer["data"]

    def wait(self, what: str, condition, timeout_s: float = 300, every_s: float = 1.0):
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"dagster dev exited; log:\n{self.log.read_text()[-4000:]}"
            value = condition()
            if value:
                return value
            time.sleep(every_s)
        raise AssertionError(f"timed out waiting for {what}; dagster dev log:\n{self.log.read_text()[-4000:]}")

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


def _processes_of(home: Path) -> list[int]:
    """Processes whose environment names this DAGSTER_HOME: everything dagster dev started."""
    marker = f"DAGSTER_HOME={home}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker in (entry / "environ").read_bytes().split(b"\0"):
                    found.append(int(entry.name))
            except OSError:
                pass
    return found


def postgres_home(root: Path) -> Path:
    """A DAGSTER_HOME holding the documented PostgreSQL instance file."""
    home = root / "dagster_home"
    home.mkdir(parents=True)
    shutil.copy(REPO / "deploy" / "dagster-postgres.yaml", home / "dagster.yaml")
    return home


def write_sample_days(landing: Path, days: list[str], events_per_day: int) -> None:
    """A landing file of generated events per day, with some malformed lines and duplicates."""
    landing.mkdir(parents=True, exist_ok=True)
    settings = GeneratorSettings(events_per_day=events_per_day, malformed_share=0.03, duplicate_share=0.02)
    for day in days:
        with (landing / f"events-{day}.jsonl").open("wb") as handle:
            handle.writelines(day_lines(date.fromisoformat(day), settings))


@pytest.fixture(scope="module")
def product(postgres, tmp_path_factory, tiny_base):
    root = tmp_path_factory.mktemp("product")
    database = postgres.create_database("dagster_product")
    home, data, landing = postgres_home(root), root / "data", root / "data" / "landing"
    write_sample_days(landing, DAYS, EVENTS_PER_DAY)
    variables = {
        **postgres.env(database),
        "DAGSTER_HOME": str(home),
        "RAG_SFT_DATA_DIR": str(data),
        "RAG_SFT_LANDING_DIR": str(landing),
        "RAG_SFT_SENSOR_INTERVAL_S": "3",
        # The backfill below is the subject here; the daily automation is tested on its own.
        "RAG_SFT_AUTOMATION": "off",
        "RAG_SFT_BASE_MODEL": str(tiny_base),
        "RAG_SFT_MIN_NEW_SAMPLES": str(MIN_NEW_SAMPLES),
        # N is sized against every accepted sample reaching SFT; triage has its own tests.
        "RAG_SFT_TRIAGE": "false",
        "RAG_SFT_TRAIN_ON_NAIVE_COMPLETIONS": "1",  # the generated events\' completions are naive
        "RAG_SFT_TRAIN_LAST_DAYS": "0",  # every day counts (make exports 1 for its demo)
        "RAG_SFT_TRAIN_MAX_LENGTH": "96",
        "RAG_SFT_EVAL_QUESTIONS": "8",  # the A/B generation on a few questions: this is not the gate's test
        "RAG_SFT_TRAIN_LEARNING_RATE": "0.005",
    }
    with running_dagster_dev(root, home, data, landing, variables) as running:
        yield running


@contextmanager
def running_dagster_dev(
    root: Path, home: Path, data: Path, landing: Path, variables: dict, workspace: Path = REPO / "workspace.yaml"
) -> Iterator[Product]:
    """`dagster dev` (webserver and daemon) over the project's workspace (or `workspace`) with
    `variables` set, once its code location has loaded; stopped with its whole process group afterwards."""
    port = free_port()
    log = root / "dagster-dev.log"
    dagster = Path(sys.executable).with_name("dagster")
    with mock.patch.dict(os.environ, variables), log.open("wb") as log_file:
        process = subprocess.Popen(
            ["env", "--default-signal=INT,TERM", str(dagster), "dev", "-h", "127.0.0.1", "-p", str(port),
             "-w", str(workspace)],
            cwd=REPO, env=dict(os.environ), stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        instance = dg.DagsterInstance.from_config(str(home))
        running = Product(port, home, data, landing, instance, process, log)
        try:
            running.wait("the webserver to load the code location", lambda: _loaded(running), timeout_s=240)
            yield running
        finally:
            running.stop()
            instance.dispose()


def _loaded(product: Product) -> bool:
    try:
        entries = product.graphql("{ workspaceOrError { ... on Workspace { locationEntries { loadStatus } } } }")
    except OSError:
        return False
    statuses = [e["loadStatus"] for e in entries["workspaceOrError"]["locationEntries"]]
    return statuses == ["LOADED"]


WORKSPACE = """
{ workspaceOrError { __typename ... on Workspace { locationEntries { name loadStatus
  locationOrLoadError { __typename ... on PythonError { message }
    ... on RepositoryLocation { repositories { name jobs { name } sensors { name sensorState { status } }
      schedules { name cronSchedule scheduleState { status } }
      assetNodes { assetKey { path } isPartitioned
        assetChecksOrError { ... on AssetChecks { checks { name blocking } } } } } } } } } } }
"""


def test_the_code_location_loads_with_every_asset_check_job_and_the_sensor(product):
    [entry] = product.graphql(WORKSPACE)["workspaceOrError"]["locationEntries"]
    assert (entry["name"], entry["loadStatus"]) == (LOCATION, "LOADED")
    location = entry["locationOrLoadError"]
    assert location["__typename"] == "RepositoryLocation", location
    [repository] = location["repositories"]
    assert repository["name"] == REPOSITORY
    assert {"daily_sft_job", "lora_training_job"} <= {job["name"] for job in repository["jobs"]}
    sensors = {s["name"]: s["sensorState"]["status"] for s in repository["sensors"]}
    assert sensors == {SENSOR: "RUNNING", "source_change_sensor": "STOPPED"}
    schedules = [(s["name"], s["cronSchedule"], s["scheduleState"]["status"]) for s in repository["schedules"]]
    assert schedules == [("daily_sft_schedule", "0 1 * * *", "STOPPED")]
    assets = {"/".join(node["assetKey"]["path"]): node for node in repository["assetNodes"]}
    assert set(assets) == {
        "raw_events", "rejected_events", "annotated_samples", "sft_records", "sft_jsonl", "sft_dataset_version",
        "training_dataset", "lora_adapter", "model_evaluation", "embedding_pairs", "retrieval_gaps",
    }  # fmt: skip
    assert all(assets[name]["isPartitioned"] for name in ("raw_events", "sft_records", "sft_jsonl"))
    checks = {name: {(c["name"], c["blocking"]) for c in node["assetChecksOrError"]["checks"]} for name, node in assets.items()}
    # The gate is the project's own (export_gate), not Dagster's blocking: see the module's docstring.
    assert checks["sft_records"] == {("confidence", False), ("label_balance", False)}
    assert checks["sft_jsonl"] == {("export_format", False)}


LAUNCH_RUN = """
mutation($params: ExecutionParams!) { launchRun(executionParams: $params) { __typename
  ... on LaunchRunSuccess { run { runId } } ... on PythonError { message } } }
"""
RUN_STATUS = "query($runId: ID!) { runOrError(runId: $runId) { ... on Run { status } } }"


def _day_counts(instance: dg.DagsterInstance, day: str) -> dict:
    counts = {}
    for asset in ("raw_events", "sft_records", "sft_jsonl"):
        result = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[day]), limit=1
        )
        [record] = result.records
        metadata = record.asset_materialization.metadata
        counts[asset] = {key: value.value for key, value in metadata.items() if isinstance(value.value, int)}
    return counts


def _assert_reconciles(counts: dict) -> None:
    raw, records, export = counts["raw_events"], counts["sft_records"], counts["sft_jsonl"]
    assert raw["events_read"] == EVENTS_PER_DAY == raw["accepted"] + raw["duplicates"] + raw["rejected"]
    assert records["accepted"] == raw["accepted"] == records["exported"] + records["filtered"]
    assert export["dagster/row_count"] == records["exported"] > 0


def launch_day(product: Product, day: str) -> str:
    """One run of the daily job on a day, launched through GraphQL as the UI does; its run id."""
    params = {
        "selector": {"repositoryLocationName": LOCATION, "repositoryName": REPOSITORY, "jobName": "daily_sft_job"},
        "executionMetadata": {"tags": [{"key": "dagster/partition", "value": day}]},
    }
    launched = product.graphql(LAUNCH_RUN, {"params": params})["launchRun"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    return launched["run"]["runId"]


def final_status(product: Product, run_id: str) -> str:
    """The run's status once it has finished, as GraphQL reports it."""

    def finished():
        status = product.graphql(RUN_STATUS, {"runId": run_id})["runOrError"]["status"]
        return status if status in FINISHED else None

    return product.wait(f"run {run_id}", finished, timeout_s=300)


def test_one_partition_launched_through_graphql_succeeds(product):
    assert final_status(product, launch_day(product, DAYS[0])) == "SUCCESS"
    _assert_reconciles(_day_counts(product.instance, DAYS[0]))
    assert (product.data / "datasets" / "sft" / f"date={DAYS[0]}" / "records.jsonl").exists()


LAUNCH_BACKFILL = """
mutation($params: LaunchBackfillParams!) { launchPartitionBackfill(backfillParams: $params) { __typename
  ... on LaunchBackfillSuccess { backfillId } ... on PythonError { message } } }
"""


def backfill(product: Product, days: list[str], timeout_s: float) -> list:
    """The days launched as one backfill of the daily job through GraphQL, as the UI does; their
    run records once every run has finished."""
    params = {
        "selector": {
            "partitionSetName": "daily_sft_job_partition_set",
            "repositorySelector": {"repositoryLocationName": LOCATION, "repositoryName": REPOSITORY},
        },
        "partitionNames": days,
    }
    launched = product.graphql(LAUNCH_BACKFILL, {"params": params})["launchPartitionBackfill"]
    assert launched["__typename"] == "LaunchBackfillSuccess", launched
    runs = dg.RunsFilter(tags={"dagster/backfill": launched["backfillId"]})

    def all_finished():
        records = product.instance.get_run_records(filters=runs)
        done = len(records) == len(days) and all(r.dagster_run.status.value in FINISHED for r in records)
        return records if done else None

    return product.wait(f"the backfill's {len(days)} runs", all_finished, timeout_s=timeout_s, every_s=1)


def test_a_seven_day_backfill_runs_concurrently_and_loses_or_doubles_no_event(product):
    records = backfill(product, DAYS[1:], timeout_s=480)
    assert sorted(r.dagster_run.tags["dagster/partition"] for r in records) == DAYS[1:]
    assert {r.dagster_run.status.value for r in records} == {"SUCCESS"}
    # The runs overlapped: the queue let several run at once on the PostgreSQL-backed instance
    # (from the queue's launch of each run to its end: a day now runs in about a second).
    spans = [(_launched_at(product.instance, r.dagster_run.run_id), r.end_time) for r in records]
    most_at_once = max(sum(1 for start, end in spans if start <= moment < end) for moment, _ in spans)
    assert most_at_once >= 2

    for day in DAYS:
        _assert_reconciles(_day_counts(product.instance, day))
    raw = pd.read_parquet(product.data / "warehouse" / "raw_events")
    rejected = pd.read_parquet(product.data / "warehouse" / "rejected_events")
    lines = sum(len(path.read_bytes().splitlines()) for path in product.landing.glob("*.jsonl"))
    assert len(raw) + len(rejected) == lines == len(DAYS) * EVENTS_PER_DAY  # every line in exactly one place
    assert raw["request_id"].is_unique
    assert set(raw["source"] + ":" + raw["source_line"].astype(str)).isdisjoint(
        set(rejected["source"] + ":" + rejected["source_line"].astype(str))
    )


def test_two_runs_of_one_day_launched_at_once_run_one_after_the_other(product):
    """The queue's per-day limit: on a cluster the day's file lock would not see the other run."""
    run_ids = [launch_day(product, DAYS[0]) for _ in range(2)]
    assert [final_status(product, run_id) for run_id in run_ids] == ["SUCCESS", "SUCCESS"]
    records = product.instance.get_run_records(filters=dg.RunsFilter(run_ids=run_ids))
    first, second = sorted((_launched_at(product.instance, r.dagster_run.run_id), r.end_time) for r in records)
    assert second[0] >= first[1]  # the second was launched only once the first had ended
    _assert_reconciles(_day_counts(product.instance, DAYS[0]))


def _launched_at(instance: dg.DagsterInstance, run_id: str) -> float:
    [launched] = instance.all_logs(run_id, of_type=dg.DagsterEventType.RUN_STARTING)
    return launched.timestamp


def _sensor_ticks(instance: dg.DagsterInstance) -> list:
    from dagster._core.scheduler.instigation import InstigatorType

    [state] = [s for s in instance.all_instigator_state(instigator_type=InstigatorType.SENSOR) if s.instigator_name == SENSOR]
    return instance.get_ticks(state.instigator_origin_id, state.selector_id, limit=50)


def test_the_training_sensor_fires_once_and_only_once(product):
    sensor_runs = dg.RunsFilter(tags={"dagster/sensor_name": SENSOR})

    def trained():
        runs = product.instance.get_run_records(filters=sensor_runs)
        return runs if runs and all(r.dagster_run.status.value in FINISHED for r in runs) else None

    [training] = product.wait("the sensor's training run", trained, timeout_s=300, every_s=2)
    assert training.dagster_run.status.value == "SUCCESS"

    def two_ticks_after_training():
        later = [t for t in _sensor_ticks(product.instance) if t.timestamp > training.end_time and t.status.value != "STARTED"]
        return later if len(later) >= 2 else None

    later = product.wait("two more sensor ticks", two_ticks_after_training, timeout_s=120)
    assert {tick.status.value for tick in later} == {"SKIPPED"}
    assert all(f" of {MIN_NEW_SAMPLES} new samples in " in tick.skip_reason for tick in later)
    assert len(product.instance.get_run_records(filters=sensor_runs)) == 1
    registry = json.loads((product.data / "models" / "registry.json").read_text())
    assert [entry["version"] for entry in registry["versions"]] == ["v0001"]


def test_stopping_dagster_dev_leaves_no_process_behind(product):
    at_stop = {pid: _describe(pid) for pid in _processes_of(product.home)}
    assert at_stop  # the webserver, the daemon, code servers
    product.stop()
    # 60 s: a code server the webserver restarted while it stopped (seen once under load, its
    # parent gone) ends by its own heartbeat timeout, 45 s; anything alive after that is left behind.
    deadline = time.monotonic() + 60
    while _processes_of(product.home) and time.monotonic() < deadline:
        time.sleep(0.5)
    survivors = _processes_of(product.home)
    assert survivors == [], (
        "still alive 60 s after dagster dev stopped:\n  "
        + "\n  ".join(map(_describe, survivors))
        + "\nalive when it was stopped:\n  "
        + "\n  ".join(at_stop.values())
    )


def _describe(pid: int) -> str:
    """A process's pid, parent, state and command line (without Dagster's long instance
    reference), as /proc shows them, or that it is gone."""
    proc = Path("/proc") / str(pid)
    try:
        status = dict(line.split(":", 1) for line in (proc / "status").read_text().splitlines() if ":" in line)
        command = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return f"pid {pid}: gone"
    command = command.split(" --instance-ref ")[0].strip()
    command = command if len(command) <= 240 else command[:240] + "..."
    return f"pid {pid} ppid {status['PPid'].strip()} {status['State'].strip()}: {command}"
