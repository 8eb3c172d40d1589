"""`make run` / `make ui` start the partitions at the first day of the events, and the
partition set stays the same across runs."""

import os
import subprocess
import sys
from datetime import date

from rag_sft.cli.generate import write_days
from rag_sft.cli.start_date import SAMPLE_DAYS, start_date
from rag_sft.core.generator import GeneratorSettings, recent_days


def test_the_start_follows_the_first_event_day_and_only_moves_earlier(tmp_path):
    assert start_date(tmp_path, date(2026, 11, 3)) == "2026-11-03"
    assert start_date(tmp_path, date(2026, 11, 5)) == "2026-11-03"  # its first file went: the partitions stay
    assert start_date(tmp_path, date(2026, 10, 30)) == "2026-10-30"  # older data arrived
    assert start_date(tmp_path, None) == "2026-10-30"


def test_an_empty_landing_folder_starts_at_the_sample_days_make_run_generates(tmp_path):
    assert start_date(tmp_path, None) == recent_days(SAMPLE_DAYS)[0].isoformat()


def test_the_command_reads_the_landing_folder_and_an_explicit_setting_wins(tmp_path):
    landing = tmp_path / "landing"
    write_days(landing, [date(2026, 11, 2), date(2026, 11, 4)], GeneratorSettings(events_per_day=5))
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path / "home"), "RAG_SFT_LANDING_DIR": str(landing),
           "RAG_SFT_DATA_DIR": str(tmp_path / "data")}  # fmt: skip
    command = [sys.executable, "-m", "rag_sft.cli.main", "start-date"]
    assert subprocess.run(command, env=env, capture_output=True, text=True, check=True).stdout == "2026-11-02\n"
    explicit = {**env, "RAG_SFT_START_DATE": "2026-01-01"}
    assert subprocess.run(command, env=explicit, capture_output=True, text=True, check=True).stdout == "2026-01-01\n"
