"""Analysts read the tables while the pipeline writes them: the documented DuckDB query never
fails and never sees half a day, during a re-run or after a run killed half-way, and what a
killed run left behind is gone after the next one."""

import os
import signal
import subprocess
import sys
import time
from datetime import date

import duckdb

from rag_sft.core.generator import GeneratorSettings
from rag_sft_tests.helpers import run_day_script

DAY = "2026-11-19"
TABLES = ("raw_events", "rejected_events", "annotated_samples", "sft_records")


def _setup(tmp_path, events: int):
    from rag_sft.cli.generate import write_days

    home, data, landing = tmp_path / "home", tmp_path / "data", tmp_path / "landing"
    write_days(landing, [date.fromisoformat(DAY)], GeneratorSettings(events_per_day=events, malformed_share=0.02, seed=3))
    env = dict(os.environ, DAGSTER_HOME=str(home), RAG_SFT_DATA_DIR=str(data), RAG_SFT_LANDING_DIR=str(landing))
    rag_sft = os.path.join(os.path.dirname(sys.executable), "rag-sft")
    subprocess.run([rag_sft, "init-home"], env=env, check=True, capture_output=True)
    return env, data


def _poll(data, connection=duckdb) -> dict[str, int]:
    """Rows per table by the query of docs/outputs.md, "Outputs" (hive-partitioned glob over every day), under the
    data folder or prefix `data`."""
    return {
        table: connection.sql(
            f"SELECT count(*) FROM read_parquet('{data}/warehouse/{table}/*/*.parquet', hive_partitioning = true)"
        ).fetchall()[0][0]
        for table in TABLES
    }


def polled_while_running(run: subprocess.Popen, poll, complete: dict[str, int]) -> tuple[list[str], int]:
    """The readers' query repeated until `run` ends, each answer the whole day as `complete` (the
    old day or the new one, the same input); the DuckDB errors met, and how many answers came."""
    errors, polls = [], 0
    while run.poll() is None:
        try:
            seen = poll()
            polls += 1
            assert seen == complete, seen
        except duckdb.Error as error:
            errors.append(str(error))
    return errors, polls


def _hidden_or_staged(data) -> list:
    staging = data / "warehouse" / ".staging"
    hidden = [p for table in TABLES for p in (data / "warehouse" / table).rglob(".*")]
    return hidden + (list(staging.iterdir()) if staging.exists() else [])


def test_the_documented_query_never_fails_during_a_rerun_or_after_a_kill(tmp_path):
    env, data = _setup(tmp_path, 6000)
    assert subprocess.run([sys.executable, "-c", run_day_script(DAY)], env=env, capture_output=True).returncode == 0
    complete = _poll(data)
    assert all(complete.values())

    rerun = subprocess.Popen([sys.executable, "-c", run_day_script(DAY)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    errors, polls = polled_while_running(rerun, lambda: _poll(data), complete)
    assert rerun.returncode == 0
    assert errors == [] and polls >= 10, (errors[:3], polls)

    # A run killed with kill -9 while it writes: readers still see the previous day whole.
    killed = subprocess.Popen([sys.executable, "-c", run_day_script(DAY)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not any((data / "warehouse" / ".staging").glob(f"*_{killed.pid}-*")) and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(killed.pid, signal.SIGKILL)
    killed.wait()
    assert _hidden_or_staged(data), "the kill left nothing behind to clean: it came too late"
    assert _poll(data) == complete

    after = subprocess.run([sys.executable, "-c", run_day_script(DAY)], env=env, capture_output=True, text=True)
    assert after.returncode == 0, after.stdout + after.stderr
    assert _poll(data) == complete
    assert _hidden_or_staged(data) == []  # the next run removed what the killed one left
