"""The project's Dagster home: created once however many commands start at the same moment, with
run monitoring on."""

import os
import sqlite3
import subprocess
import sys
import time

import dagster as dg
import yaml

from rag_sft.cli import home as cli_home

# Imports first, then every process opens the home at the same instant, as `rag-sft run`
# started twice in a row does: the project's set-up, then the instance a run uses.
OPEN_HOME_AT = """
import sys, time
import dagster as dg
from rag_sft.cli.home import ensure_dagster_home

time.sleep(max(0.0, float(sys.argv[1]) - time.time()))
ensure_dagster_home()
with dg.DagsterInstance.get() as instance:
    instance.get_runs_count()
"""


def alembic_heads(home) -> dict:
    databases = [home / "history" / "runs.db", home / "history" / "runs" / "index.db", home / "schedules" / "schedules.db"]
    return {db.name: sqlite3.connect(db).execute("SELECT version_num FROM alembic_version").fetchall() for db in databases}


def test_commands_started_at_once_on_a_new_home_create_one_schema(tmp_path):
    for attempt in range(2):
        home = tmp_path / f"home{attempt}"
        env = {**os.environ, "DAGSTER_HOME": str(home)}
        start = time.time() + 8  # after every process has imported Dagster
        processes = [
            subprocess.Popen([sys.executable, "-c", OPEN_HOME_AT, str(start)], env=env, stderr=subprocess.PIPE, text=True)
            for _ in range(4)
        ]
        errors = [process.communicate()[1] for process in processes]
        assert all(process.returncode == 0 for process in processes), errors
        assert all(len(heads) == 1 for heads in alembic_heads(home).values()), alembic_heads(home)

    @dg.asset
    def one() -> int:
        return 1

    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert dg.materialize([one], instance=instance).success
        assert instance.get_runs_count() == 1


def test_the_home_enables_run_monitoring_and_loads_as_an_instance(tmp_path, monkeypatch):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    cli_home.ensure_dagster_home()
    config = yaml.safe_load((tmp_path / "dagster.yaml").read_text())
    assert config["run_monitoring"]["enabled"] is True and config["run_monitoring"]["poll_interval_seconds"] == 30
    with dg.DagsterInstance.get() as instance:
        assert instance.run_monitoring_enabled and instance.run_monitoring_poll_interval_seconds == 30


def test_a_home_the_project_wrote_before_gets_run_monitoring_and_others_are_left_alone(tmp_path, monkeypatch):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "old"))
    (tmp_path / "old").mkdir()
    earlier = cli_home.PROJECT_HEADER + "telemetry:\n  enabled: false\n"
    (tmp_path / "old" / "dagster.yaml").write_text(earlier)
    cli_home.ensure_dagster_home()
    assert (tmp_path / "old" / "dagster.yaml").read_text() == cli_home.DAGSTER_YAML

    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "own"))
    (tmp_path / "own").mkdir()
    (tmp_path / "own" / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    cli_home.ensure_dagster_home()
    assert (tmp_path / "own" / "dagster.yaml").read_text() == "telemetry:\n  enabled: false\n"


# A day materialized as `rag-sft run` does, by an asset that never finishes.
SLOW_DAY = """
import time
import dagster as dg
from rag_sft.assets.partitions import daily_partitions
from rag_sft.cli.home import ensure_dagster_home
from rag_sft.cli.runner import materialize_day

@dg.asset(partitions_def=daily_partitions)
def slow() -> None:
    time.sleep(120)

job = dg.Definitions(assets=[slow], jobs=[dg.define_asset_job("slow_job", [slow])]).resolve_job_def("slow_job")
ensure_dagster_home()
with dg.DagsterInstance.get() as instance:
    materialize_day(job, "2026-11-18", instance)
"""


def test_a_run_whose_command_was_killed_is_marked_failed_by_the_next_command(tmp_path, monkeypatch):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    cli_home.ensure_dagster_home()  # the storage exists before this test and the command both open it
    command = subprocess.Popen([sys.executable, "-c", SLOW_DAY], env=dict(os.environ))
    try:
        deadline = time.monotonic() + 60
        started = []
        while not started and time.monotonic() < deadline:
            time.sleep(0.5)
            with dg.DagsterInstance.get() as instance:
                started = instance.get_runs(dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED]))
        assert len(started) == 1
    finally:
        command.kill()
        command.wait()
    cli_home.ensure_dagster_home()  # what the next rag-sft command (or make ui) does first
    with dg.DagsterInstance.get() as instance:
        run = instance.get_run_by_id(started[0].run_id)
        assert run.status == dg.DagsterRunStatus.FAILURE
        assert any("is gone" in (event.message or "") for event in instance.all_logs(run.run_id))
