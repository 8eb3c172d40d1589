"""Erasure's rules without Dagster: ingest leaves erased requests out with counts that
reconcile, and record files lose the erased lines with the lines that follow them."""

import orjson
import pyarrow as pa

from rag_sft.core import erasure, ingest
from rag_sft.core.ingest import SourceLine


def event(request_id: str, question: str) -> bytes:
    return orjson.dumps(
        {
            "request_id": request_id,
            "question": question,
            "answer": f"the answer to {question}",
            "docs": [{"id": "d1", "content": "some document", "score": 0.9}],
            "evaluation": {"score": 0.5, "labels": ["factuality_error"]},
            "timestamp": "2026-11-17T10:00:00Z",
        }
    )


def test_ingest_counts_erased_events_under_erased_and_writes_no_row_of_them():
    lines = [
        event("req-1", "secret one"),
        event("req-10", "kept: its id only starts like an erased one"),
        event("req-1", "secret one again"),  # a duplicate
        orjson.dumps({"request_id": "req-2", "question": "secret two"}),  # rejected, id readable
        event("req-3", "secret three")[:-20],  # unreadable JSON: only its raw text names req-3
        event("req-4", "kept"),
    ]
    counts = ingest.IngestCounts()
    batches = list(
        erasure.without_erased(
            ingest.ingest([SourceLine("f.jsonl", n + 1, raw) for n, raw in enumerate(lines)], 32768, 4, counts),
            erasure.request_ids([" req-1 ", "req-2", "req-3", ""]),
            counts,
        )
    )
    accepted = pa.Table.from_batches([b.accepted for b in batches if b.accepted is not None])
    dead = [b.dead_letter for b in batches if b.dead_letter is not None]
    assert accepted.column("request_id").to_pylist() == ["req-10", "req-4"]
    assert dead == []
    assert (counts.read, counts.accepted, counts.duplicates, counts.rejected, counts.erased) == (6, 2, 0, 0, 4)
    assert counts.reconciles() and not counts.reject_reasons


def test_record_files_lose_the_erased_lines_and_the_lines_following_them():
    records = b"".join(
        orjson.dumps({"request_id": rid, "prompt": f"p{n}"}) + b"\n" for n, rid in enumerate(["a", "b", "c", "b"])
    )
    trainer = b"".join(orjson.dumps({"prompt": f"p{n}"}) + b"\n" for n in range(4))
    drop = erasure.record_lines_to_drop(records, {"b"})
    assert drop == [1, 3]
    assert erasure.drop_lines(trainer, drop) == b'{"prompt":"p0"}\n{"prompt":"p2"}\n'
    assert [orjson.loads(line)["request_id"] for line in erasure.drop_lines(records, drop).splitlines()] == ["a", "c"]


def test_counts_of_a_rewritten_partition_still_reconcile():
    removed = pa.table({"status": ["exported", "filtered", "exported"]})
    previous = {"dagster/row_count": 10, "accepted": 10, "exported": 7, "filtered": 3, "held_back": 0, "path": "x"}
    updated = erasure.counts_after_erasure(previous, 3, erasure.removed_counts("sft_records", removed))
    assert updated == {"dagster/row_count": 7, "accepted": 7, "exported": 5, "filtered": 2, "erased": 3}
