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
