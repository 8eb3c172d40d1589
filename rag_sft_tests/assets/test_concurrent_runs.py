"""Two runs of the same day at once (a scheduled run and a manual backfill): they follow each
other, both succeed, and the day's outputs are one consistent set."""

import fcntl
import hashlib
import os
import subprocess
import sys
import time
from datetime import date

import dagster as dg

from rag_sft.core.generator import GeneratorSettings
from rag_sft_tests.assets.test_pipeline import generate
from rag_sft_tests.helpers import run_day_script

DAY = "2026-11-19"
RUN_DAY = run_day_script(DAY)


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_two_runs_of_one_day_follow_each_other_and_leave_one_consistent_day(tmp_path):
    home, data, landing = tmp_path / "home", tmp_path / "data", tmp_path / "landing"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    from rag_sft.cli.generate import write_days

    write_days(landing, [date.fromisoformat(DAY)], GeneratorSettings(events_per_day=3000, malformed_share=0.01, seed=5))
    env = dict(os.environ, DAGSTER_HOME=str(home), RAG_SFT_DATA_DIR=str(data), RAG_SFT_LANDING_DIR=str(landing))
    with dg.DagsterInstance.from_config(str(home)):
        pass  # the instance's storage exists before the two runs start

    def start():
        return subprocess.Popen([sys.executable, "-c", RUN_DAY], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

    def waiting_runs(instance) -> int:
        return sum(
            "another run of 2026-11-19 is writing it" in (entry.user_message or "")
            for run in instance.get_runs()
            for entry in instance.all_logs(run.run_id)
        )

    # The day is being written (its lock held here) when both runs start, however slow the
    # machine: both wait, then take the day one after the other.
    lock = data / "state" / "locks" / f"{DAY}.lock"
    lock.parent.mkdir(parents=True)
    with lock.open("a") as held, dg.DagsterInstance.from_config(str(home)) as instance:
        fcntl.flock(held, fcntl.LOCK_EX)
        runs = [start(), start()]
        deadline = time.monotonic() + 300
        while waiting_runs(instance) < 2 and time.monotonic() < deadline:
            assert all(run.poll() is None for run in runs), [run.communicate()[0].decode()[-2000:] for run in runs]
            time.sleep(0.2)
        fcntl.flock(held, fcntl.LOCK_UN)
    outputs = [run.communicate(timeout=600)[0].decode() for run in runs]
    assert [run.returncode for run in runs] == [0, 0], outputs

    with dg.DagsterInstance.from_config(str(home)) as instance:
        records = instance.get_run_records(filters=dg.RunsFilter(tags={"dagster/partition": DAY}))
        assert len(records) == 2 and {r.dagster_run.status for r in records} == {dg.DagsterRunStatus.SUCCESS}
        windows = []
        for record in records:
            logs = instance.all_logs(record.dagster_run.run_id)
            steps = [entry.timestamp for entry in logs if entry.dagster_event and entry.dagster_event.is_step_start]
            ends = [entry.timestamp for entry in logs if entry.dagster_event and entry.dagster_event.is_step_success]
            windows.append((min(steps), max(ends)))
        first, second = sorted(windows)
        assert first[1] <= second[0], "the two runs wrote the day at the same time"
        assert waiting_runs(instance) >= 2

        raw = instance.fetch_materializations(dg.AssetKey("raw_events"), limit=1).records[0].asset_materialization.metadata
        assert raw["events_read"].value == raw["accepted"].value + raw["duplicates"].value + raw["rejected"].value

    jsonl = data / "datasets" / "sft" / f"date={DAY}" / "records.jsonl"
    before = _digest(jsonl)
    again = subprocess.run([sys.executable, "-c", RUN_DAY], env=env, capture_output=True, text=True, check=False)
    assert again.returncode == 0, again.stdout + again.stderr
    assert _digest(jsonl) == before  # what the racing runs left is what one run makes
    staged = list((data / "warehouse" / ".staging").iterdir())
    hidden = [p for table in ("raw_events", "sft_records") for p in (data / "warehouse" / table).rglob(".*")]
    assert staged + hidden == []


def test_the_pipeline_helper_is_unaffected_by_the_lock(pipeline):
    generate(pipeline, days=[DAY], events_per_day=50)
    assert pipeline.materialize(DAY).success
    assert pipeline.materialize(DAY).success  # the lock is released after each run
