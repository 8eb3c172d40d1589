import uuid
from datetime import UTC, date, datetime

import orjson
import pytest
import sqlalchemy as sa

from rag_sft.core import events, ingest
from rag_sft.io.sources.landing import LandingFolder
from rag_sft.io.sources.lines import SourceUnavailable, quick_line_date
from rag_sft.io.sources.sql import SqlTable
from rag_sft_tests.helpers import event, write_lines, write_sql_rows

D18, D19, D20 = date(2026, 11, 18), date(2026, 11, 19), date(2026, 11, 20)


def test_quick_date_agrees_with_the_parsed_timestamp():
    assert quick_line_date(orjson.dumps(event("a", "2026-11-19T23:30:00-05:00"))) == D20
    nested = event("a")
    nested["evaluation"]["checks"] = {"timestamp": 1.0}
    assert quick_line_date(orjson.dumps(nested).replace(b'"timestamp":1.0', b'"timestamp":"2020-01-01"')) is None
    assert quick_line_date(b'{"question": "what \\"timestamp\\": \\"2020-01-01\\"", "x": 1}') is None


def test_a_nested_timestamp_places_no_line_only_the_top_level_key_does(tmp_path):
    """A line without a top-level timestamp is undated, whatever its evaluation or docs hold: it
    joins its neighbour's day (and is rejected there), and no phantom day appears."""
    in_evaluation = event("b")
    del in_evaluation["timestamp"]
    in_evaluation["evaluation"]["timestamp"] = "2026-11-18T09:00:00Z"
    in_doc = event("c")
    del in_doc["timestamp"]
    in_doc["docs"][1]["timestamp"] = "2026-11-20T09:00:00Z"
    broken = b'{"request_id": "d", "evaluation": {"timestamp": "2026-11-18T09:00:00Z", "sco'
    assert [quick_line_date(orjson.dumps(line)) for line in (in_evaluation, in_doc)] == [None, None]
    assert quick_line_date(broken) is None
    assert quick_line_date(b'{"question": "{[ \\" ]", "timestamp": "2026-11-19T10:00:00Z", "answ') == D19  # brackets in a string
    assert quick_line_date(b'{"docs": [{"id": "}"}], "timestamp": "2026-11-19T10:00:00Z", "answ') == D19  # broken after it
    write_lines(tmp_path / "events.jsonl", [event("a", "2026-11-19T08:00:00Z"), in_evaluation, in_doc, broken])
    landing = LandingFolder(tmp_path)
    assert landing.days_present() == {D19: 4}
    assert [line.line for line in landing.lines_for_day(D19)] == [1, 2, 3, 4]
    assert [line.line for day in (D18, D20) for line in landing.lines_for_day(day)] == []


def test_lines_go_to_the_day_of_their_timestamp_and_bad_lines_to_their_neighbours(tmp_path):
    write_lines(
        tmp_path / "b" / "mixed.jsonl",
        [
            b"garbage before any date",
            event("a", "2026-11-18T10:00:00Z"),
            b"{broken",
            event("b", "2026-11-19T10:00:00Z"),
            "",
            event("c", "2026-11-19T23:30:00-05:00"),
            b'{"timestamp": "not a time"}',
        ],
    )
    write_lines(tmp_path / "a" / "only-bad-2026-11-18.jsonl", [b"nope"])
    landing = LandingFolder(tmp_path)
    by_day = {day: [(l.source, l.line) for l in landing.lines_for_day(day)] for day in (D18, D19, D20)}
    assert by_day[D18] == [("a/only-bad-2026-11-18.jsonl", 1), ("b/mixed.jsonl", 1), ("b/mixed.jsonl", 2), ("b/mixed.jsonl", 3)]
    assert by_day[D19] == [("b/mixed.jsonl", 4)]
    assert by_day[D20] == [("b/mixed.jsonl", 6), ("b/mixed.jsonl", 7)]
    assert landing.days_present() == {D18: 4, D19: 1, D20: 2}


def test_missing_landing_folder_names_it(tmp_path):
    with pytest.raises(SourceUnavailable, match=str(tmp_path / "nope")):
        LandingFolder(tmp_path / "nope").files()


def make_table(url, rows):
    engine = sa.create_engine(url)
    with engine.begin() as connection:
        connection.execute(sa.text(
            "CREATE TABLE raw_quality_events (id INTEGER PRIMARY KEY, request_id TEXT, question TEXT, "
            "docs TEXT, answer TEXT, evaluation TEXT, timestamp TEXT)"
        ))
        for row in rows:
            connection.execute(sa.text(
                "INSERT INTO raw_quality_events (request_id, question, docs, answer, evaluation, timestamp) "
                "VALUES (:request_id, :question, :docs, :answer, :evaluation, :timestamp)"
            ), row)
    engine.dispose()


def as_row(value: dict) -> dict:
    return {**value, "docs": orjson.dumps(value["docs"]).decode(), "evaluation": orjson.dumps(value["evaluation"]).decode()}


def test_sql_table_reads_a_day_with_bad_rows_in_the_dead_letter(tmp_path):
    url = f"sqlite:///{tmp_path / 'events.db'}"
    make_table(url, [
        as_row(event("a", "2026-11-19T01:00:00Z")),
        {**as_row(event("b", "2026-11-19T02:00:00Z")), "docs": "[{broken"},
        {**as_row(event("c", "2026-11-19T03:00:00Z")), "timestamp": "garbled"},
        as_row(event("d", "2026-11-20T01:00:00Z")),
        {**as_row(event("e", "2026-11-19T04:00:00Z")), "question": None},
    ])
    table = SqlTable(url)
    assert table.days_present() == {D19: 4, D20: 1}
    counts = ingest.IngestCounts()
    batches = list(ingest.ingest(table.lines_for_day(D19), 1000, 100, counts))
    assert (counts.read, counts.accepted, counts.rejected) == (4, 1, 3)
    dead = batches[0].dead_letter.to_pylist()
    assert [(d["source"], d["source_line"], d["reason"]) for d in dead] == [
        ("sql:raw_quality_events", 2, events.INVALID_JSON),
        ("sql:raw_quality_events", 3, events.INVALID_TIMESTAMP),
        ("sql:raw_quality_events", 5, events.MISSING_FIELD),
    ]
    assert "[{broken" in dead[0]["raw_text"]


def test_unreachable_database_is_a_clear_error_without_the_password(tmp_path):
    missing = tmp_path / "no" / "such" / "dir" / "events.db"
    with pytest.raises(SourceUnavailable, match="raw_quality_events"):
        SqlTable(f"sqlite:///{missing}").days_present()
    with pytest.raises(SourceUnavailable) as caught:
        SqlTable("postgresql+psycopg2://user:s3cret@127.0.0.1:1/db").days_present()
    assert "s3cret" not in str(caught.value)


def neighbour_rule_days(rows: list[tuple[int, str | None]]) -> dict[int, date]:
    """The placement of docs/asset-graph.md, "Every event ends in exactly one place", read off the whole table: an
    undated row takes the day of the nearest dated row before it, or after it at the table's start."""
    days, waiting, carried = {}, [], None
    for row_id, stamp in rows:
        day = events.timestamp_date(stamp) if stamp else None
        if day is None and carried is None:
            waiting.append(row_id)
            continue
        carried = day or carried
        days.update({waiting_id: carried for waiting_id in waiting})
        waiting = []
        days[row_id] = carried
    return days


def test_a_sql_day_is_found_without_reading_history_and_keeps_the_neighbour_rule(tmp_path):
    url = f"sqlite:///{tmp_path / 'events.db'}"
    stamps = [
        None, "garbled",  # undated rows at the table's start: they go to the first dated day
        "2026-11-18T10:00:00Z", None, "2026-11-18T23:30:00-05:00",  # the last is 11-19 in UTC
        "2026-11-19T01:00:00Z", "oops", "2026-11-18T12:00:00Z",  # a late row of 11-18 between 11-19 rows
        None, "2026-11-19T05:00:00Z", "2026-11-20T00:10:00+01:00",  # 11-19 in UTC
        "2026-11-20T10:00:00Z", "bad", None,  # undated rows at the end
    ]
    make_table(url, [as_row(event(f"r{i}", stamp)) for i, stamp in enumerate(stamps)])
    expected = neighbour_rule_days(list(enumerate(stamps, 1)))
    table = SqlTable(url)
    for day in (D18, D19, D20):
        assert [line.line for line in table.lines_for_day(day)] == sorted(i for i, d in expected.items() if d == day)
    assert table.days_present() == {D18: 6, D19: 5, D20: 3}


def test_sql_days_present_counts_only_new_rows(tmp_path):
    url = f"sqlite:///{tmp_path / 'events.db'}"
    make_table(url, [as_row(event("a", "2026-11-18T10:00:00Z")), as_row(event("b", "2026-11-19T10:00:00Z"))])
    counts_path = tmp_path / "state" / "sql-days.json"
    assert SqlTable(url, state_path=counts_path).days_present() == {D18: 1, D19: 1}
    engine = sa.create_engine(url)
    with engine.begin() as connection:
        # the counted rows are not read again: rewriting one does not change the counts
        connection.execute(sa.text("UPDATE raw_quality_events SET timestamp = '2026-11-20T10:00:00Z' WHERE id = 1"))
        connection.execute(
            sa.text("INSERT INTO raw_quality_events (request_id, question, docs, answer, evaluation, timestamp) "
                    "VALUES (:request_id, :question, :docs, :answer, :evaluation, :timestamp)"),
            as_row(event("c", "2026-11-19T11:00:00Z")),
        )
    engine.dispose()
    assert SqlTable(url, state_path=counts_path).days_present() == {D18: 1, D19: 2}


def ingest_day(table: SqlTable, day: date) -> tuple[ingest.IngestCounts, list[dict], list[dict]]:
    counts = ingest.IngestCounts()
    batches = list(ingest.ingest(table.lines_for_day(day), 1000, 100, counts))
    accepted = [row for batch in batches if batch.accepted is not None for row in batch.accepted.to_pylist()]
    dead = [row for batch in batches if batch.dead_letter is not None for row in batch.dead_letter.to_pylist()]
    assert counts.reconciles()
    return counts, accepted, dead


def test_a_row_without_id_goes_to_the_dead_letter_on_the_day_of_its_timestamp(tmp_path):
    url = f"sqlite:///{tmp_path / 'events.db'}"
    today = datetime.now(UTC).date()
    write_sql_rows(url, "INTEGER", [
        (1, event("a", "2026-11-19T01:00:00Z")),
        (None, event("no-id-19", "2026-11-19T02:00:00Z")),
        (None, event("no-id-20", "2026-11-20T23:30:00-05:00")),  # 11-21 in UTC
        (None, event("no-id-undated", "garbled")),
        (2, event("b", "2026-11-20T01:00:00Z")),
    ])
    table = SqlTable(url)
    counts, accepted, dead = ingest_day(table, D19)
    assert (counts.read, counts.accepted, counts.rejected) == (2, 1, 1)
    assert [row["request_id"] for row in accepted] == ["a"]
    assert [(d["source"], d["source_line"], d["reason"], d["request_id"]) for d in dead] == [
        ("sql:raw_quality_events", None, events.MISSING_ID, None),
    ]
    assert "no id" in dead[0]["detail"] and "no-id-19" in dead[0]["raw_text"]
    assert [orjson.loads(d["raw_text"])["request_id"] for d in ingest_day(table, date(2026, 11, 21))[2]] == ["no-id-20"]
    # Without a readable timestamp either, the row is rejected on the UTC day it is read.
    assert [orjson.loads(d["raw_text"])["request_id"] for d in ingest_day(table, today)[2]] == ["no-id-undated"]
    assert table.days_present() == {D19: 2, D20: 1, date(2026, 11, 21): 1, today: 1}


def test_one_id_on_two_days_is_read_on_each_of_its_days(tmp_path):
    url = f"sqlite:///{tmp_path / 'events.db'}"
    write_sql_rows(url, "INTEGER", [
        (1, event("a", "2026-11-19T01:00:00Z")),
        (2, event("b", "2026-11-19T02:00:00Z")),
        (2, event("c", "2026-11-20T02:00:00Z")),
        (3, event("d", "2026-11-20T03:00:00Z")),
    ])
    table = SqlTable(url)
    placed = {day: [row["request_id"] for row in ingest_day(table, day)[1]] for day in (D18, D19, D20)}
    assert placed == {D18: [], D19: ["a", "b"], D20: ["c", "d"]}


def test_text_ids_are_the_rows_lineage(tmp_path):
    url = f"sqlite:///{tmp_path / 'events.db'}"
    first, second, third = (str(uuid.UUID(int=n)) for n in (1, 2, 3))
    write_sql_rows(url, "TEXT PRIMARY KEY", [
        (first, event("a", "2026-11-19T01:00:00Z")),
        (second, {**event("b", "2026-11-19T02:00:00Z"), "question": " "}),
        (third, event("a", "2026-11-19T03:00:00Z")),
    ])
    counts, accepted, dead = ingest_day(SqlTable(url), D19)
    assert (counts.accepted, counts.rejected, counts.duplicates) == (1, 1, 1)
    assert [(row["source"], row["source_line"]) for row in accepted] == [(f"sql:raw_quality_events#{first}", None)]
    assert [(d["source"], d["source_line"], d["outcome"]) for d in dead] == [
        (f"sql:raw_quality_events#{second}", None, "rejected"),
        (f"sql:raw_quality_events#{third}", None, "duplicate"),
    ]


@pytest.mark.parametrize("url", [
    "postgresql+psycopg2://user:s3cret@127.0.0.1:1/db",  # unreachable
    "postgresql+psycopg2://user:s3cret@127.0.0.1:notaport/db",  # unreadable port
    "not a url at all s3cret",  # unreadable as a whole
])
def test_the_sql_password_is_in_no_repr_str_or_error(url):
    table = SqlTable(url)
    with pytest.raises(SourceUnavailable) as caught:
        table.days_present()
    shown = [repr(table), str(table), f"{table}", str(caught.value), repr(caught.value), repr([table])]
    assert not [text for text in shown if "s3cret" in text]
    assert "raw_quality_events" in str(caught.value)


def test_sql_rows_dated_outside_the_partitions_are_rejected_on_their_neighbours_day(tmp_path):
    url = f"sqlite:///{tmp_path / 'events.db'}"
    stamps = ["2026-11-18T10:00:00Z", "9999-12-31T00:00:00Z", None, "2026-11-19T10:00:00Z", "0001-01-01T00:00:00Z"]
    make_table(url, [as_row(event(f"r{i}", stamp)) for i, stamp in enumerate(stamps, 1)])
    table = SqlTable(url, valid_days=(date(2025, 1, 1), date(2026, 11, 30)))
    placed = {}
    for day in (D18, D19):
        counts = ingest.IngestCounts()
        batches = list(ingest.ingest(table.lines_for_day(day), 1000, 100, counts))
        dead = [row for batch in batches if batch.dead_letter is not None for row in batch.dead_letter.to_pylist()]
        placed[day] = (counts.accepted, sorted((row["source_line"], row["reason"]) for row in dead))
    # row 2 (year 9999) and the undated row after it stay with 11-18; row 5 (year 1) follows 11-19
    assert placed[D18] == (1, [(2, events.TIMESTAMP_OUT_OF_RANGE), (3, events.MISSING_FIELD)])
    assert placed[D19] == (1, [(5, events.TIMESTAMP_OUT_OF_RANGE)])
    assert table.days_present() == {D18: 3, D19: 2}
