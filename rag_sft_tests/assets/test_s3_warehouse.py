"""The daily pipeline with its warehouse and datasets on an S3 server (SeaweedFS, started by the
tests): what it writes there is what it writes on a local disk, and analysts read it as they do
locally."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import duckdb_extension_httpfs
import orjson
import pandas as pd
import pyarrow.fs as pafs
import s3fs

from rag_sft.io.storage.location import location
from rag_sft.resources import EventSource, TrainerExports
from rag_sft.testing.s3_server import start_s3_server
from rag_sft_tests.assets.test_pipeline import generate
from rag_sft_tests.conftest import Pipeline
from rag_sft_tests.helpers import hold_back_days

DAYS = ["2026-11-17", "2026-11-18", "2026-11-19"]


def objects(uri: str) -> dict[str, bytes]:
    """Every object under the prefix, by key, with its bytes."""
    prefix = location(uri)
    fs = prefix.store.filesystem()
    files = fs.get_file_info(pafs.FileSelector(prefix.key, recursive=True))
    return {info.path: fs.open_input_stream(info.path).read() for info in files if info.type == pafs.FileType.File}


def duckdb_on(server) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection reading the server's bucket, as docs/s3.md, "Analysts", shows an analyst."""
    connection = duckdb.connect()
    # The extension comes from its package, loaded from the file: nothing is downloaded.
    extension = next(Path(duckdb_extension_httpfs.__file__).parent.rglob("httpfs.duckdb_extension"))
    connection.execute(f"LOAD '{extension}'")
    credentials = server.env()
    connection.execute(
        f"CREATE SECRET s3_test (TYPE s3, KEY_ID '{credentials['AWS_ACCESS_KEY_ID']}', "
        f"SECRET '{credentials['AWS_SECRET_ACCESS_KEY']}', REGION 'us-east-1', "
        f"ENDPOINT '{server.endpoint.removeprefix('http://')}', URL_STYLE 'path', USE_SSL false)"
    )
    return connection


def test_days_on_s3_reconcile_publish_what_a_local_disk_gets_and_rerun_byte_for_byte(s3_data_dir, tmp_path, instance):
    local = Pipeline(tmp_path, instance)
    remote = Pipeline(tmp_path, instance, data_dir=s3_data_dir)
    generate(local, events_per_day=150, malformed_share=0.05, duplicate_share=0.05)
    for day in DAYS:
        result = remote.materialize(day)
        raw = remote.metadata(result, "raw_events")
        records = remote.metadata(result, "sft_records")
        exported = remote.metadata(result, "sft_jsonl")
        assert raw["events_read"] == 150 == raw["accepted"] + raw["duplicates"] + raw["rejected"]
        assert records["accepted"] == raw["accepted"] == records["exported"] + records["filtered"]
        assert exported["path"] == f"{s3_data_dir}/datasets/sft/date={day}/records.jsonl"
        lines = [orjson.loads(line) for line in remote.jsonl(day).read_bytes().splitlines()]
        assert len(lines) == exported["dagster/row_count"] == records["exported"] and lines[0]["date"] == day
        local.materialize(day)
        assert remote.jsonl(day).read_bytes() == local.jsonl(day).read_bytes()

    written = objects(s3_data_dir)
    tables = {key.split("/")[3] for key in written if "/warehouse/" in key}
    assert tables == {"raw_events", "rejected_events", "annotated_samples", "sft_records"}
    assert sum(1 for key in written if key.endswith("part-0.parquet")) == 4 * len(DAYS)
    assert not [path for path in (tmp_path / "state" / "spool").rglob("*") if path.is_file()]  # every upload cleaned up

    remote.materialize(DAYS[1])
    assert objects(s3_data_dir) == written  # same keys, same bytes


def test_analysts_read_the_s3_warehouse_with_pandas_and_duckdb_as_locally(s3_server, s3_data_dir, tmp_path, instance):
    local = Pipeline(tmp_path, instance)
    remote = Pipeline(tmp_path, instance, data_dir=s3_data_dir)
    generate(local, events_per_day=60)
    for day in DAYS:
        local.materialize(day)
        remote.materialize(day)

    frame = pd.read_parquet(f"{s3_data_dir}/warehouse/annotated_samples", storage_options=s3_server.storage_options())
    assert sorted(frame["date"].astype(str).unique()) == DAYS
    local_frame = pd.read_parquet(local.data / "warehouse" / "annotated_samples")
    assert sorted(frame["sample_id"]) == sorted(local_frame["sample_id"])

    query = "SELECT date, count(*) FROM read_parquet('{}/sft_records/*/*.parquet', hive_partitioning = true) GROUP BY date ORDER BY date"
    on_s3 = duckdb_on(s3_server).execute(query.format(f"{s3_data_dir}/warehouse")).fetchall()
    on_disk = duckdb.sql(query.format(local.data / "warehouse")).fetchall()
    assert [str(day) for day, _ in on_s3] == DAYS and on_s3 == on_disk


class LandingThatKillsTheStore(EventSource):
    """The landing folder; opening it kills the S3 server: the store goes away in the middle of
    the run, once the events are being read."""

    def open(self, state_dir=None):
        SERVERS_TO_KILL.pop().stop()
        return super().open(state_dir)


SERVERS_TO_KILL: list = []


def test_an_s3_server_killed_mid_run_fails_it_clearly_and_the_previous_day_stays(tmp_path, instance, monkeypatch):
    server = start_s3_server()  # its own: this test kills it
    try:
        for name, value in server.env().items():
            monkeypatch.setenv(name, value)
        pipeline = Pipeline(tmp_path, instance, data_dir=server.uri("fault"))
        day = DAYS[0]
        generate(pipeline, days=[day], events_per_day=80)
        pipeline.materialize(day)
        table = f"{server.uri('fault')}/warehouse/annotated_samples"
        before = pd.read_parquet(table, storage_options=server.storage_options())
        generate(pipeline, days=[day], events_per_day=120, seed=5)  # the day's events change

        SERVERS_TO_KILL.append(server)
        result = pipeline.materialize(
            day, raise_on_error=False, event_source=LandingThatKillsTheStore(landing_dir=str(pipeline.landing))
        )
        assert not result.success and not SERVERS_TO_KILL
        failure = next(event for event in result.all_events if event.is_step_failure)
        error = failure.event_specific_data.error.cause  # under Dagster's "error occurred while executing"
        assert error.cls_name == "StorageUnavailable"
        assert server.endpoint in error.message and f"bucket {server.bucket!r}" in error.message

        server.start()
        after_failure = pd.read_parquet(table, storage_options=server.storage_options())
        pd.testing.assert_frame_equal(after_failure, before)
        rerun = pipeline.materialize(day)
        assert pipeline.metadata(rerun, "raw_events")["events_read"] == 120
        s3fs.S3FileSystem.clear_instance_cache()  # s3fs caches listings and ETags: the day was rewritten since
        assert len(pd.read_parquet(table, storage_options=server.storage_options())) != len(before)
    finally:
        server.remove()


def test_no_secret_reaches_the_run_config_or_metadata(s3_server, s3_data_dir, tmp_path, instance):
    pipeline = Pipeline(tmp_path, instance, data_dir=s3_data_dir)
    generate(pipeline, days=[DAYS[0]], events_per_day=20)
    result = pipeline.materialize(DAYS[0])
    secret = s3_server.env()["AWS_SECRET_ACCESS_KEY"]
    run = instance.get_run_by_id(result.run_id)
    stored = " ".join(str(entry) for entry in instance.all_logs(result.run_id)) + str(run) + repr(pipeline.resources()["warehouse"])
    assert s3_data_dir in stored
    assert secret not in stored


def test_on_s3_trainer_exports_publish_beside_the_jsonl_and_a_held_back_day_leaves_none(
    s3_server, s3_data_dir, tmp_path, instance, monkeypatch
):
    pipeline = Pipeline(tmp_path, instance, data_dir=s3_data_dir)
    day = DAYS[2]
    generate(pipeline, days=[day], events_per_day=300)
    pipeline.materialize(day, trainer_exports=TrainerExports(formats=["alpaca"]))
    folder = pipeline.jsonl(day).parent
    assert [path.name for path in folder.iterdir()] == ["alpaca.jsonl", "dataset_info.json", "records.jsonl"]
    assert json.loads((folder / "dataset_info.json").read_bytes())[f"rag_sft_{day}"]["file_name"] == "alpaca.jsonl"

    hold_back_days(monkeypatch)  # a check fails at ERROR
    result = pipeline.materialize(day, raise_on_error=False)
    assert instance.get_run_by_id(result.run_id).tags["rag_sft/held_back"] == "confidence"
    assert not folder.exists()
    s3fs.S3FileSystem.clear_instance_cache()
    rows = pd.read_parquet(f"{s3_data_dir}/warehouse/sft_records", storage_options=s3_server.storage_options())
    assert "held_back" in set(rows["status"]) and "exported" not in set(rows["status"])


def test_the_documented_duckdb_query_on_s3_never_fails_during_a_rerun_or_after_a_kill(s3_server, s3_data_dir, tmp_path):
    from rag_sft_tests.assets.test_readers_during_runs import DAY, _poll, _setup, polled_while_running
    from rag_sft_tests.helpers import run_day_script

    env, _ = _setup(tmp_path, 3000)
    env.update(RAG_SFT_DATA_DIR=s3_data_dir, RAG_SFT_STATE_DIR=str(tmp_path / "state"))  # AWS_*: the fixture's
    staging = tmp_path / "state" / "spool" / ".staging"
    connection = duckdb_on(s3_server)

    def poll() -> dict[str, int]:
        return _poll(s3_data_dir, connection)

    def run_day() -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-c", run_day_script(DAY)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    assert run_day().wait() == 0
    complete = poll()
    assert all(complete.values())

    rerun = run_day()
    errors, polls = polled_while_running(rerun, poll, complete)
    assert rerun.returncode == 0
    assert errors == [] and polls >= 5, (errors[:3], polls)

    # A run killed with kill -9 while it writes: readers still see the previous day whole.
    killed = run_day()
    deadline = time.monotonic() + 120
    while not any(staging.glob(f"*_{killed.pid}-*")) and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(killed.pid, signal.SIGKILL)
    killed.wait()
    assert list(staging.iterdir()), "the kill left nothing behind to clean: it came too late"
    assert poll() == complete

    assert run_day().wait() == 0
    assert poll() == complete
    assert list(staging.iterdir()) == []  # the next run removed what the killed one left
