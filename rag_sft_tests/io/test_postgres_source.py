"""The SQL event source on a real PostgreSQL server: docs and evaluation as JSONB, timestamps as
timestamptz, with the same validation and dead letter as the same events in a landing file."""

from __future__ import annotations

import dagster as dg
import orjson
import pandas as pd
import sqlalchemy as sa

from rag_sft.core import events
from rag_sft.resources import EventSource
from rag_sft_tests.conftest import Pipeline
from rag_sft_tests.helpers import event, write_lines

DAY = "2026-11-19"
JSONB_TABLE = """
CREATE TABLE raw_quality_events (
    id BIGSERIAL PRIMARY KEY, request_id TEXT, question TEXT, docs JSONB, answer TEXT,
    evaluation JSONB, timestamp TIMESTAMPTZ)
"""


def quality_events() -> list[dict]:
    """Good events and every kind of bad row a JSONB/timestamptz table can hold."""
    good = [event(f"ok{n}", f"{DAY}T0{n % 10}:00:00Z", question=f"问题{n}?", score=0.5 + n / 100) for n in range(12)]
    bad_evaluation = event("no-score", f"{DAY}T10:00:00Z")
    del bad_evaluation["evaluation"]["score"]
    return [
        *good[:6],
        {**event("docs-object", f"{DAY}T10:00:00Z"), "docs": {"id": "d1", "content": "not a list"}},
        bad_evaluation,
        event("score-text", f"{DAY}T10:00:00Z", score="high"),
        event("score-high", f"{DAY}T10:00:00Z", score=1.7),
        {**event("no-question", f"{DAY}T10:00:00Z"), "question": None},
        event("labels-text", f"{DAY}T10:00:00Z", labels="factuality_error"),
        event("blank-answer", f"{DAY}T10:00:00Z", answer="   "),
        {**event("no-time"), "timestamp": None},  # the neighbour rule puts it on this day
        event("ok0", f"{DAY}T11:00:00Z", question="又问一次"),  # a duplicate request_id
        event("other-day", "2026-11-20T08:00:00+08:00"),  # 2026-11-20 00:00 in UTC
        *good[6:],
    ]


def insert(url: str, rows: list[dict]) -> None:
    engine = sa.create_engine(url)
    with engine.begin() as connection:
        connection.execute(sa.text(JSONB_TABLE))
        statement = sa.text(
            "INSERT INTO raw_quality_events (request_id, question, docs, answer, evaluation, timestamp) "
            "VALUES (:request_id, :question, CAST(:docs AS JSONB), :answer, CAST(:evaluation AS JSONB), "
            "CAST(:timestamp AS TIMESTAMPTZ))"
        )
        for row in rows:
            connection.execute(statement, {
                **row, "docs": orjson.dumps(row["docs"]).decode(), "evaluation": orjson.dumps(row["evaluation"]).decode()
            })  # fmt: skip
    engine.dispose()


def outcome(pipeline: Pipeline, result: dg.ExecuteInProcessResult) -> tuple:
    raw = pipeline.metadata(result, "raw_events")
    warehouse = pipeline.data / "warehouse"
    accepted = pd.read_parquet(warehouse / "raw_events").drop(columns=["source", "source_line"])
    dead = pd.read_parquet(warehouse / "rejected_events")
    counts = {key: raw[key] for key in ("events_read", "accepted", "duplicates", "rejected")}
    return counts, accepted, sorted(zip(dead["request_id"].fillna(""), dead["outcome"], dead["reason"]))


def test_a_postgres_jsonb_table_is_validated_and_dead_lettered_as_a_landing_file_is(postgres, tmp_path, instance):
    rows = quality_events()
    database = postgres.create_database("events_jsonb")
    insert(postgres.url(database), rows)
    from_sql = Pipeline(tmp_path / "sql", instance)
    source = EventSource(kind="sql", sql_url=postgres.url(database))
    sql_result = from_sql.materialize(DAY, event_source=source)

    from_file = Pipeline(tmp_path / "file", instance)
    write_lines(from_file.landing / "events.jsonl", rows)
    file_result = from_file.materialize(DAY)

    sql_counts, sql_accepted, sql_dead = outcome(from_sql, sql_result)
    file_counts, file_accepted, file_dead = outcome(from_file, file_result)
    # A blank answer is valid input (docs/spec.md, "A raw quality event": only request_id and question must be
    # non-empty).
    assert sql_counts == file_counts == {"events_read": 21, "accepted": 13, "duplicates": 1, "rejected": 7}
    assert sql_dead == file_dead
    reasons = {request_id: reason for request_id, _, reason in sql_dead}
    assert reasons["docs-object"] == events.WRONG_TYPE and reasons["labels-text"] == events.WRONG_TYPE
    assert reasons["no-score"] == events.MISSING_FIELD and reasons["no-question"] == events.MISSING_FIELD
    assert (reasons["score-text"], reasons["score-high"]) == (events.SCORE_NOT_A_NUMBER, events.SCORE_OUT_OF_RANGE)
    assert "blank-answer" not in reasons and reasons["no-time"] == events.MISSING_FIELD
    pd.testing.assert_frame_equal(sql_accepted.reset_index(drop=True), file_accepted.reset_index(drop=True))
    assert from_sql.jsonl(DAY).read_bytes() == from_file.jsonl(DAY).read_bytes()
    dead_text = pd.read_parquet(from_sql.data / "warehouse" / "rejected_events").set_index("request_id")
    assert orjson.loads(dead_text.loc["docs-object", "raw_text"])["docs"] == {"id": "d1", "content": "not a list"}

    later = from_sql.materialize("2026-11-20", event_source=source)
    assert from_sql.metadata(later, "raw_events")["accepted"] == 1
