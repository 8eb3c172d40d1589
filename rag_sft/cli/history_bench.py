"""`make bench-history`: does a day cost more when the source holds a month of history?

The same last day (20,000 events by default) is materialized from a source that holds only
that day and from one that holds 29 earlier days too, for the landing folder and for a SQL
table (SQLite, with an index on `timestamp`). History is indexed before the timed run, as the
daemon's sensor does when those days land; the timed run refreshes the index itself, so it pays
for looking at every file. Prints `history_ratio=<t30/t1>` per source.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

import orjson
import sqlalchemy as sa

from rag_sft.cli.generate import write_days
from rag_sft.core.generator import GeneratorSettings, recent_days


def run_history_bench(events_per_day: int, history_days: int, workdir: Path | None, sources: list[str]) -> int:
    root = workdir or Path(tempfile.mkdtemp(prefix="rag_sft_history_"))
    last = recent_days(1)[0]
    days = [last - timedelta(days=n) for n in range(history_days - 1, -1, -1)]
    settings = GeneratorSettings(events_per_day=events_per_day, malformed_share=0.001, duplicate_share=0.001)
    try:
        started = time.perf_counter()
        everything = root / "landing-history"
        write_days(everything, days, settings)
        alone = root / "landing-alone"
        alone.mkdir()
        name = f"events-{last.isoformat()}.jsonl"
        os.link(everything / name, alone / name)
        print(f"generated {history_days} days of {events_per_day} events in {time.perf_counter() - started:.0f}s", flush=True)
        results = {}
        if "landing" in sources:
            results["landing"] = [_timed_day(root / f"landing-{label}", last, {"RAG_SFT_SOURCE": "landing", "RAG_SFT_LANDING_DIR": str(folder)})
                                  for label, folder in (("1", alone), (str(history_days), everything))]
        if "sql" in sources:
            timings = []
            for label, folder in (("1", alone), (str(history_days), everything)):
                database = root / f"events-{label}.db"
                _load_table(database, sorted(folder.glob("*.jsonl")))
                timings.append(_timed_day(root / f"sql-{label}", last, {"RAG_SFT_SOURCE": "sql", "RAG_SFT_SQL_URL": f"sqlite:///{database}"}))
            results["sql"] = timings
        for source, (one, many) in results.items():
            print(f"{source}: last day alone {one:.2f}s, with {history_days - 1} days of history {many:.2f}s")
            print(f"history_ratio_{source}={many / one:.3f}")
        return 0
    finally:
        if workdir is None:
            shutil.rmtree(root, ignore_errors=True)


def _load_table(database: Path, files: list[Path]) -> None:
    """The events as rows of raw_quality_events (docs and evaluation as JSON text), id in file order."""
    engine = sa.create_engine(f"sqlite:///{database}")
    with engine.begin() as connection:
        connection.execute(sa.text(
            "CREATE TABLE raw_quality_events (id INTEGER PRIMARY KEY, request_id TEXT, question TEXT, docs TEXT, "
            "answer TEXT, evaluation TEXT, timestamp TEXT)"
        ))
        connection.execute(sa.text("CREATE INDEX raw_quality_events_timestamp ON raw_quality_events (timestamp)"))
        insert = sa.text(
            "INSERT INTO raw_quality_events (request_id, question, docs, answer, evaluation, timestamp) "
            "VALUES (:request_id, :question, :docs, :answer, :evaluation, :timestamp)"
        )
        for path in files:
            rows = []
            for raw in path.read_bytes().splitlines():
                try:
                    value = orjson.loads(raw)
                except orjson.JSONDecodeError:
                    continue  # the landing's malformed lines have no row shape
                if isinstance(value, dict):
                    rows.append({key: _column(value.get(key)) for key in _ROW_KEYS})
            connection.execute(insert, rows)
    engine.dispose()


_ROW_KEYS = ("request_id", "question", "docs", "answer", "evaluation", "timestamp")


def _column(value):
    """Text as it is, anything else as JSON text (docs, evaluation)."""
    return value if value is None or isinstance(value, str) else orjson.dumps(value).decode()


def _timed_day(root: Path, day: date, source_env: dict[str, str]) -> float:
    """Seconds to materialize `day` in a fresh process, after the source's history is indexed."""
    env = dict(os.environ, DAGSTER_HOME=str(root / "dagster_home"), RAG_SFT_DATA_DIR=str(root / "data"), **source_env)
    index = subprocess.run([sys.executable, "-m", "rag_sft.cli.history_bench", "index"], env=env, check=False, capture_output=True, text=True)
    if index.returncode != 0:
        raise SystemExit(index.stderr)
    child = subprocess.run([sys.executable, "-m", "rag_sft.cli.bench", day.isoformat()], env=env, capture_output=True, text=True, check=False)
    if child.returncode != 0:
        raise SystemExit(child.stdout + child.stderr)
    return json.loads(child.stdout.strip().splitlines()[-1])["run_seconds"]


def _index_history() -> None:
    """What the daemon's sensor does as days land: bring the source's index up to date."""
    from rag_sft.resources import EventSource, Warehouse

    EventSource().open(Warehouse().state_dir()).days_present()


if __name__ == "__main__" and sys.argv[1:] == ["index"]:
    _index_history()
