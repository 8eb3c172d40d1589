"""A SQL table through the daily assets: every row in exactly one partition, whatever its id."""

import uuid

import pandas as pd

from rag_sft.resources import EventSource
from rag_sft_tests.helpers import event, write_sql_rows

DAYS = ["2026-11-19", "2026-11-20"]


def test_rows_with_text_missing_and_repeated_ids_each_land_once(pipeline):
    url = f"sqlite:///{pipeline.root / 'events.db'}"
    text_id = [str(uuid.UUID(int=n)) for n in range(5)]
    rows = [
        (text_id[1], event("a", "2026-11-19T01:00:00Z")),
        (None, event("no-id", "2026-11-19T02:00:00Z")),
        (text_id[2], event("b", "2026-11-19T03:00:00Z")),
        (text_id[2], event("c", "2026-11-20T01:00:00Z")),  # the same id on the next day
        (text_id[3], event("c", "2026-11-20T02:00:00Z")),  # a duplicate request_id
        (text_id[4], {**event("d", "2026-11-20T03:00:00Z"), "answer": None}),
    ]
    write_sql_rows(url, "TEXT", rows)
    source = EventSource(kind="sql", sql_url=url)
    read = 0
    for day in DAYS:
        metadata = pipeline.metadata(pipeline.materialize(day, event_source=source), "raw_events")
        assert metadata["events_read"] == metadata["accepted"] + metadata["duplicates"] + metadata["rejected"]
        read += metadata["events_read"]
    assert read == len(rows)

    accepted = pd.read_parquet(pipeline.data / "warehouse" / "raw_events")
    dead = pd.read_parquet(pipeline.data / "warehouse" / "rejected_events")
    # No day's Parquet holds another day's event.
    assert (accepted["timestamp"].dt.strftime("%Y-%m-%d") == accepted["date"].astype(str)).all()
    assert sorted(zip(accepted["date"].astype(str), accepted["request_id"])) == [
        ("2026-11-19", "a"), ("2026-11-19", "b"), ("2026-11-20", "c")
    ]
    assert sorted(zip(dead["date"].astype(str), dead["source"], dead["reason"])) == [
        ("2026-11-19", "sql:raw_quality_events", "missing_id"),
        ("2026-11-20", f"sql:raw_quality_events#{text_id[3]}", "duplicate_request_id"),
        ("2026-11-20", f"sql:raw_quality_events#{text_id[4]}", "missing_field"),
    ]
    assert accepted["source"].tolist() == [f"sql:raw_quality_events#{text_id[n]}" for n in (1, 2, 2)]
