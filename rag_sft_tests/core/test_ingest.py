import orjson

from rag_sft.core import events, ingest
from rag_sft.core.ingest import SourceLine
from rag_sft_tests.helpers import event


def run(lines, max_field_chars=1000, batch_size=2):
    counts = ingest.IngestCounts()
    batches = list(ingest.ingest(lines, max_field_chars, batch_size, counts))
    accepted = [row for b in batches if b.accepted is not None for row in b.accepted.to_pylist()]
    dead = [row for b in batches if b.dead_letter is not None for row in b.dead_letter.to_pylist()]
    return counts, accepted, dead


def line(n, raw):
    return SourceLine("f.jsonl", n, raw if isinstance(raw, bytes) else orjson.dumps(raw))


def test_counts_reconcile_and_first_duplicate_wins():
    lines = [
        line(1, event("a", answer="first")),
        line(2, b"{not json"),
        line(3, event("a", answer="second")),
        line(4, event("b")),
        line(5, b"[1]"),
        line(6, event("c", score=3)),
    ]
    counts, accepted, dead = run(lines)
    assert (counts.read, counts.accepted, counts.duplicates, counts.rejected) == (6, 2, 1, 3)
    assert counts.reconciles()
    assert [(r["request_id"], r["answer"]) for r in accepted] == [("a", "first"), ("b", "三天内一定到账。")]
    assert [(d["source_line"], d["outcome"], d["reason"]) for d in dead] == [
        (2, "rejected", events.INVALID_JSON),
        (3, "duplicate", events.DUPLICATE_REQUEST_ID),
        (5, "rejected", events.NOT_AN_OBJECT),
        (6, "rejected", events.SCORE_OUT_OF_RANGE),
    ]
    assert dead[2]["raw_text"] == "[1]"
    assert dead[3]["request_id"] == "c"


def test_invalid_utf8_is_kept_escaped_in_the_dead_letter():
    raw = orjson.dumps(event("u")).replace(b'"answer":"', b'"answer":"\xff', 1)
    counts, accepted, dead = run([line(1, raw)])
    assert counts.rejected == 1 and not accepted
    assert dead[0]["reason"] == events.INVALID_UTF8
    assert "\\xff" in dead[0]["raw_text"]


def test_accepted_batch_has_the_raw_events_schema():
    _counts, accepted, _ = run([line(1, event("a", docs=[{"content": "x"}]))])
    row = accepted[0]
    assert row["docs"] == [{"id": "", "content": "x", "score": 0.0}]
    assert row["checks"] == [("factuality", 0.3)]
    assert row["source"] == "f.jsonl" and row["source_line"] == 1
    assert row["timestamp"].isoformat() == "2026-11-19T08:00:00+00:00"


def with_nested_field(request_id: str, depth: int) -> bytes:
    """A valid event with an extra field {"x": {"x": ... 1}} of `depth` levels of objects."""
    extra = b'{"x":' * depth + b"1" + b"}" * depth
    return orjson.dumps(event(request_id)).replace(b'"timestamp"', b'"extra":' + extra + b',"timestamp"')


DEEP_LINE = b'{"x":' * 1000 + b"1" + b"}" * 1000  # 7 KB that used to fail the whole day


def test_lines_nested_too_deep_are_invalid_json_and_the_rest_is_judged():
    limit = events.MAX_JSON_DEPTH
    lines = [
        line(1, event("a")),
        line(2, DEEP_LINE),
        line(3, with_nested_field("b", 1000)),  # an otherwise valid event
        line(4, with_nested_field("c", limit)),  # one level too deep with the event's own
        line(5, b"[" * 5000 + b"]" * 5000),  # deeper than orjson's own limit
        line(6, with_nested_field("d", limit - 1)),  # exactly the limit
        line(7, {**event("e"), "extra": {"trace": [{"span": [1, 2]}]}}),
    ]
    counts, accepted, dead = run(lines, batch_size=10)
    assert counts.reconciles() and (counts.read, counts.accepted, counts.rejected) == (7, 3, 4)
    assert [r["request_id"] for r in accepted] == ["a", "d", "e"]
    assert [(d["source_line"], d["reason"], d["detail"]) for d in dead] == [
        (n, events.INVALID_JSON, events.TOO_DEEP_DETAIL) for n in (2, 3, 4, 5)
    ]
    assert "nesting is too deep" in events.TOO_DEEP_DETAIL


def test_judging_a_deep_line_does_not_depend_on_the_stack_depth():
    def judged_at_depth(frames: int):
        if frames:
            return judged_at_depth(frames - 1)
        return ingest.judge_lines([line(1, with_nested_field("a", 40)), line(2, DEEP_LINE)], 1000)

    for frames in (0, 300, 800):
        chunk = judged_at_depth(frames)
        assert chunk.accepted.column("request_id").to_pylist() == ["a"]
        assert [row["reason"] for _, row in chunk.dead] == [events.INVALID_JSON]


def test_a_request_accepted_on_an_earlier_day_is_a_duplicate_of_that_day():
    lines = [line(1, event("old")), line(2, event("new")), line(3, event("new")), line(4, event("old"))]
    counts = ingest.IngestCounts()
    chunks = (ingest.judge_lines(chunk, 1000) for chunk in ingest.batched(lines, 2))
    asked: list[list[str]] = []

    def first_days(request_ids):
        asked.append(request_ids)
        return {"old": "2026-11-17"} if "old" in request_ids else {}

    batches = list(ingest.deduplicated(chunks, counts, first_days))
    accepted = [row["request_id"] for b in batches if b.accepted is not None for row in b.accepted.to_pylist()]
    dead = [(d["source_line"], d["outcome"], d["detail"]) for b in batches if b.dead_letter is not None for d in b.dead_letter.to_pylist()]
    assert accepted == ["new"]
    assert dead == [
        (1, "duplicate", "request_id 'old' first seen on 2026-11-17"),
        (3, "duplicate", "request_id 'new' seen earlier this day"),
        (4, "duplicate", "request_id 'old' first seen on 2026-11-17"),
    ]
    assert counts.reconciles() and counts.duplicates == 3
    assert asked == [["old", "new"], ["new", "old"]]  # one look-up per chunk, of its own ids only
