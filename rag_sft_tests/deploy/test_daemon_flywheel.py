"""The flywheel with nobody at the keyboard: only `dagster-daemon run` over a new instance, data
and landing folder. A closed day found in the folder is materialized, a day that lands later is
too, a late file re-materializes its day (and only it), and the training sensor fires once the
new samples reach N."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import dagster as dg

from rag_sft.core.generator import GeneratorSettings, day_lines
from rag_sft_tests.helpers import event, write_lines

REPO = Path(__file__).resolve().parents[2]
DAY1, DAY2 = "2026-11-10", "2026-11-11"
EVENTS_PER_DAY = 300  # about 220 exported a day: N below lies between one day and two


def _write_day(landing: Path, day: str) -> None:
    settings = GeneratorSettings(events_per_day=EVENTS_PER_DAY, seed=int(day[-2:]))
    staged = landing / f".events-{day}.jsonl.part"  # written aside, then renamed in, as shippers do
    with staged.open("wb") as handle:
        handle.writelines(day_lines(date.fromisoformat(day), settings))
    staged.rename(landing / f"events-{day}.jsonl")


def _day_runs(instance: dg.DagsterInstance, day: str) -> list[dg.DagsterRun]:
    return list(instance.get_runs(filters=dg.RunsFilter(job_name="daily_sft_job", tags={"dagster/partition": day})))


def _wait(what: str, condition, daemon: subprocess.Popen, log: Path, timeout_s: float = 240):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert daemon.poll() is None, f"the daemon exited; log:\n{log.read_text()[-4000:]}"
        value = condition()
        if value:
            return value
        time.sleep(1)
    raise AssertionError(f"timed out waiting for {what}; daemon log:\n{log.read_text()[-4000:]}")


def _succeeded(runs: list[dg.DagsterRun], count: int) -> bool:
    finished = [run for run in runs if run.status in (dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE)]
    assert all(run.status == dg.DagsterRunStatus.SUCCESS for run in finished), [run.status for run in finished]
    return len(finished) >= count


def test_the_daemon_alone_materializes_closed_and_late_days_and_trains(tmp_path, tiny_base):
    home, data, landing = tmp_path / "home", tmp_path / "data", tmp_path / "landing"
    home.mkdir()
    landing.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    with dg.DagsterInstance.from_config(str(home)):
        pass  # storage created once, before the daemon's processes open it at the same time
    _write_day(landing, DAY1)
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "RAG_SFT_DATA_DIR": str(data),
        "RAG_SFT_LANDING_DIR": str(landing),
        "RAG_SFT_SOURCE_SENSOR_INTERVAL_S": "2",
        "RAG_SFT_SENSOR_INTERVAL_S": "2",
        "RAG_SFT_MIN_NEW_SAMPLES": "350",
        # N is sized against every accepted sample reaching SFT; triage has its own tests.
        "RAG_SFT_TRIAGE": "false",
        "RAG_SFT_TRAIN_ON_NAIVE_COMPLETIONS": "1",  # the generated events\' completions are naive
        "RAG_SFT_TRAIN_LAST_DAYS": "0",
        "RAG_SFT_BASE_MODEL": str(tiny_base),
        "RAG_SFT_TRAIN_MAX_LENGTH": "96",
        "RAG_SFT_EVAL_QUESTIONS": "8",  # the A/B generation on a few questions: this is not the gate's test
    }
    log = tmp_path / "daemon.log"
    daemon_bin = Path(sys.executable).with_name("dagster-daemon")
    with log.open("wb") as log_file:
        daemon = subprocess.Popen(
            ["env", "--default-signal=INT,TERM", str(daemon_bin), "run", "-w", str(REPO / "workspace.yaml")],
            cwd=REPO, env=env, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True,
        )
    try:
        with dg.DagsterInstance.from_config(str(home)) as instance:
            _wait(f"{DAY1} materialized", lambda: _succeeded(_day_runs(instance, DAY1), 1), daemon, log)
            assert (data / "datasets" / "sft" / f"date={DAY1}" / "records.jsonl").exists()

            _write_day(landing, DAY2)  # the folder grows while the daemon runs
            write_lines(landing / "late" / "stragglers.jsonl", [event(f"late-{i}", f"{DAY1}T23:59:0{i}Z") for i in range(3)])
            _wait(f"{DAY2} materialized", lambda: _succeeded(_day_runs(instance, DAY2), 1), daemon, log)
            _wait(f"{DAY1} re-materialized", lambda: _succeeded(_day_runs(instance, DAY1), 2), daemon, log)

            training = dg.RunsFilter(job_name="lora_training_job")
            _wait("the training run", lambda: _succeeded(list(instance.get_runs(filters=training)), 1), daemon, log, 300)
            time.sleep(6)  # a few more ticks of both sensors: nothing new, nothing launched
            assert len(_day_runs(instance, DAY1)) == 2 and len(_day_runs(instance, DAY2)) == 1
            assert len(instance.get_runs(filters=training)) == 1
            raw = instance.fetch_materializations(
                dg.AssetRecordsFilter(asset_key=dg.AssetKey("raw_events"), asset_partitions=[DAY1]), limit=1
            ).records[0].asset_materialization.metadata
            assert raw["events_read"].value == EVENTS_PER_DAY + 3
    finally:
        if daemon.poll() is None:
            os.killpg(daemon.pid, signal.SIGTERM)
            try:
                daemon.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(daemon.pid, signal.SIGKILL)
                daemon.wait()
