"""`rag-sft run` (what `make run` calls) as a user runs it: real, skewed traffic is exported."""

import os
import shutil
import subprocess
import sys
from datetime import date

from rag_sft.cli.generate import write_days
from rag_sft.core.generator import GeneratorSettings

BALANCED, SKEWED = date(2026, 11, 18), date(2026, 11, 19)


def run_cli(tmp_path, **env):
    environment = {
        **os.environ,
        "RAG_SFT_LANDING_DIR": str(tmp_path / "landing"),
        "RAG_SFT_DATA_DIR": str(tmp_path / "data"),
        "DAGSTER_HOME": str(tmp_path / "dagster_home"),
        **env,
    }
    return subprocess.run(
        [sys.executable, "-m", "rag_sft.cli.main", "run", "--skip-training"], env=environment, capture_output=True, text=True, check=False
    )


def test_skewed_days_like_real_traffic_are_exported(tmp_path):
    write_days(tmp_path / "landing", [BALANCED], GeneratorSettings(events_per_day=200))
    (tmp_path / "landing" / "skewed").mkdir()
    write_days(tmp_path / "landing" / "skewed", [SKEWED], GeneratorSettings(events_per_day=200, factuality_share=0.95))
    jsonl = tmp_path / "data" / "datasets" / "sft" / "date={}" / "records.jsonl"

    done = run_cli(tmp_path)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert next(line for line in lines if line.startswith("2026-11-18")).endswith(("ok", "warned"))
    # 95% factuality errors: exported whole (the training set caps it); at most a warning on the mix.
    assert next(line for line in lines if line.startswith("2026-11-19")).endswith(("ok", "warned"))
    assert "Days held back" not in done.stdout
    assert os.path.exists(str(jsonl).format(BALANCED)) and os.path.exists(str(jsonl).format(SKEWED))


def test_the_summary_names_the_llm_its_requests_and_the_days_with_uncorrected_samples():
    from rag_sft.cli.runner import DayReport, format_summary

    counts = {"events_read": 10, "exported": 6, "filtered": 4, "duplicates": 0, "rejected": 0}
    reports = [
        DayReport("2026-11-18", True, {**counts, "llm_requests": 7, "llm_cache_hits": 0, "completion_failed": 1},
                  llm_model="teacher"),
        DayReport("2026-11-19", True, {**counts, "llm_requests": 0, "llm_cache_hits": 7, "completion_failed": 0},
                  llm_model="teacher"),
    ]  # fmt: skip
    summary = format_summary(reports)
    assert "LLM corrections (teacher): 7 requests, 7 answers from the cache" in summary
    assert "Samples the LLM did not correct (counted as filtered, asked again on the next run):\n  2026-11-18: 1" in summary
    assert "2026-11-19: " not in summary.split("did not correct")[1].split("JSONL")[0]
    assert "LLM corrections" not in format_summary([DayReport("2026-11-19", True, counts)])


def test_run_reads_events_from_a_sql_table_named_by_the_environment(tmp_path):
    import orjson

    from rag_sft.core.generator import day_lines
    from rag_sft_tests.io.test_sources import as_row, make_table

    database = tmp_path / "events" / "quality.db"
    database.parent.mkdir()
    events = [orjson.loads(line) for line in day_lines(BALANCED, GeneratorSettings(events_per_day=120))]
    make_table(f"sqlite:///{database}", [as_row(event) for event in events])

    done = run_cli(tmp_path, RAG_SFT_SOURCE="sql", RAG_SFT_SQL_URL=f"sqlite:///{database}")
    assert done.returncode == 0, done.stderr
    assert next(line for line in done.stdout.splitlines() if line.startswith("2026-11-18")).endswith("ok")
    assert (tmp_path / "data" / "datasets" / "sft" / f"date={BALANCED}" / "records.jsonl").stat().st_size > 0
    assert str(database) not in done.stdout + done.stderr  # the URL is a secret
    assert not (tmp_path / "landing").exists()  # a SQL source never generates sample files


def test_a_day_that_fails_names_the_os_error_and_keeps_its_earlier_jsonl_listed(tmp_path):
    write_days(tmp_path / "landing", [BALANCED], GeneratorSettings(events_per_day=120))
    assert run_cli(tmp_path).returncode == 0
    jsonl = tmp_path / "data" / "datasets" / "sft" / f"date={BALANCED}" / "records.jsonl"
    earlier = jsonl.read_bytes()
    # A file where the warehouse expects a folder: fails for root too, as a full disk or a
    # read-only mount would.
    table = tmp_path / "data" / "warehouse" / "raw_events"
    shutil.rmtree(table)
    table.write_text("not a folder")

    failed = run_cli(tmp_path)
    assert failed.returncode == 1, failed.stderr
    lines = failed.stdout.splitlines()
    assert next(line for line in lines if line.startswith(str(BALANCED))).endswith("FAILED")
    reason = lines[lines.index("Days that failed:") + 1]
    assert reason.startswith(f"  {BALANCED}: ") and 'op "raw_events"' in reason
    assert f"NotADirectoryError: [Errno 20] Not a directory: '{table}" in reason
    assert lines[lines.index("JSONL files:") + 1] == f"  {BALANCED}  {jsonl}  (from an earlier run)"
    assert jsonl.read_bytes() == earlier


def test_an_empty_folder_of_the_users_is_an_error_and_gets_no_sample_events(tmp_path):
    (tmp_path / "landing").mkdir()
    done = run_cli(tmp_path)
    assert done.returncode == 2
    assert f"landing folder {tmp_path / 'landing'} holds no events" in done.stderr
    assert list((tmp_path / "landing").iterdir()) == []  # nothing was made up in the user's folder


def test_a_landing_prefix_in_a_missing_bucket_is_an_error_naming_the_endpoint_and_the_bucket(tmp_path, s3_server):
    done = run_cli(tmp_path, RAG_SFT_LANDING_DIR="s3://no-such-bucket/landing", **s3_server.env())
    assert done.returncode == 2
    assert f"the object store at {s3_server.endpoint} (bucket 'no-such-bucket') has no such bucket" in done.stderr


def test_a_start_that_is_no_day_is_refused_naming_the_argument(tmp_path):
    write_days(tmp_path / "landing", [BALANCED], GeneratorSettings(events_per_day=20))
    done = subprocess.run(
        [sys.executable, "-m", "rag_sft.cli.main", "run", "--skip-training", "--start", "2026-13-45"],
        env={**os.environ, "RAG_SFT_LANDING_DIR": str(tmp_path / "landing"), "RAG_SFT_DATA_DIR": str(tmp_path / "data"),
             "DAGSTER_HOME": str(tmp_path / "dagster_home")},
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 2
    assert "argument --start: '2026-13-45' is not a day (YYYY-MM-DD)" in done.stderr
    assert "No events" not in done.stdout and not (tmp_path / "data").exists()
    refused = subprocess.run([sys.executable, "-m", "rag_sft.cli.main", "run", "--end", "2026-11-31"],
                             capture_output=True, text=True, check=False)  # fmt: skip
    assert refused.returncode == 2 and "argument --end: '2026-11-31' is not a day (YYYY-MM-DD)" in refused.stderr
