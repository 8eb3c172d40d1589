"""Judging a day range by range, in worker processes, gives exactly the line-by-line result."""

import itertools
from pathlib import Path
from datetime import date

import orjson
import pytest

from rag_sft.core import ingest
from rag_sft.core.generator import GeneratorSettings, day_lines
from rag_sft.io.sources import landing_scan
from rag_sft.io.sources.landing import LandingFolder
from rag_sft_tests.helpers import event, write_lines

D18, D19, D20 = date(2026, 11, 18), date(2026, 11, 19), date(2026, 11, 20)


def folder_with_every_case(root):
    generated = list(day_lines(D19, GeneratorSettings(events_per_day=120, malformed_share=0.2, duplicate_share=0.1, seed=4)))
    write_lines(root / "day.jsonl", [line.rstrip(b"\n") for line in generated])
    write_lines(
        root / "sub" / "mixed.jsonl",
        [
            b"garbage before any date",
            b"",
            event("a", "2026-11-18T10:00:00Z"),
            b"{broken",
            event("b", "2026-11-19T10:00:00Z"),
            b"   ",
            b"undated in the middle",
            event("b", "2026-11-19T11:00:00Z"),  # duplicate of a line in another range
            event("c", "2026-11-19T23:30:00-05:00"),
            b'{"timestamp": "not a time"}',
            event("d", "2026-11-19T12:00:00Z"),
            event("e", "2026-11-18 23:00:00-05:00"),  # an unusual shape: dated the slow way
            event("f", "2026-02-30T00:00:00Z"),  # an impossible date: undated
            {**event("g", "2026-11-19T13:00:00Z"), "request_id": 5},
            orjson.dumps(event("h")).replace(b'"timestamp":"2026', b'"timestamp":"\\u0032026'),
        ],
    )
    (root / "crlf.jsonl").write_bytes(
        b"not json\r\n" + b"\r\n".join(orjson.dumps(event(f"w{i}")) for i in range(5)) + b"\r\n"
    )
    write_lines(root / "only-bad-2026-11-19.jsonl", [b"nope", b"nope again"])
    return LandingFolder(root)


def line_by_line(folder, day):
    counts = ingest.IngestCounts()
    batches = list(ingest.ingest(folder.lines_for_day(day), 32768, 50, counts))
    return counts, _rows(batches)


def by_ranges(folder, day, workers, range_bytes, scratch):
    counts = ingest.IngestCounts()
    chunks = landing_scan.judged_chunks(folder, day, 32768, workers, scratch, range_bytes)
    return counts, _rows(list(ingest.deduplicated(chunks, counts)))


def _rows(batches):
    accepted = [row for b in batches if b.accepted is not None for row in b.accepted.to_pylist()]
    dead = [row for b in batches if b.dead_letter is not None for row in b.dead_letter.to_pylist()]
    return accepted, dead


@pytest.mark.parametrize("workers, range_bytes", [(1, 1 << 20), (1, 300), (2, 300), (2, 5000)])
@pytest.mark.parametrize("day", [D18, D19, D20])
def test_ranges_match_line_by_line(tmp_path, workers, range_bytes, day):
    folder = folder_with_every_case(tmp_path / "landing")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    expected = line_by_line(folder, day)
    assert by_ranges(folder, day, workers, range_bytes, scratch) == expected
    assert expected[0].reconciles() and expected[0].read > 0
    assert list(scratch.iterdir()) == []  # every IPC file consumed


def test_a_day_reads_its_spans_only_and_every_line_is_in_a_span(tmp_path):
    folder = folder_with_every_case(tmp_path)
    covered: dict[str, set[int]] = {}
    for day in (D18, D19, D20):
        ranges = landing_scan.plan_ranges(folder, day, 1000)
        for a, b in itertools.pairwise(ranges):
            assert a.end == b.start or a.path != b.path or b.lines_before > 0  # contiguous within a span
        for r in ranges:
            data = Path(r.path).read_bytes()
            assert r.start == 0 or data[r.start - 1 : r.start] == b"\n"  # starts at a line start
            assert r.end == len(data) or data[r.end - 1 : r.end] == b"\n"  # ends after a line end
            covered.setdefault(r.path, set()).update(range(r.start, r.end))
    for path in folder.files():
        data = path.read_bytes()
        non_blank = {i for i, byte in enumerate(data) if not chr(byte).isspace()}
        assert non_blank <= covered[str(path)]
    # the file that holds only D19 lines is not read for the other days
    day_file = str(folder.root / "day.jsonl")
    assert all(r.path != day_file for r in landing_scan.plan_ranges(folder, D18, 1000))
