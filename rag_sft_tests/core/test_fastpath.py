"""The fast path never accepts what the rule book rejects, and normalizes exactly as it does."""

from datetime import date

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from rag_sft.core import events, fastpath, ingest, tables
from rag_sft.core.generator import GeneratorSettings, day_lines
from rag_sft.core.ingest import SourceLine
from rag_sft_tests.helpers import event

MAX_CHARS = 2000  # above the generator's texts, so only the edge cases hit it


def with_evaluation(**changes):
    value = event("r1")
    value["evaluation"].update(changes)
    return value


EDGE_CASES = [
    event("r1"),
    event("  r1  ", question="  问题?  "),
    event("r1", answer="\u3000\u3000"),  # ideographic spaces only: blank
    event("r1", answer="\x1c\x1d"),  # blank for Python, not for every Unicode table
    event("r1", answer="\x0b"),  # blank for Python, not for RE2's \s
    event("r1\x0b", question="\x85问题"),
    event("r1", question="问题\u200b"),  # a zero-width space is not whitespace
    event("r1", answer=" x "),
    event("r1", answer=""),
    event("r1", answer="a" * MAX_CHARS),
    event("r1", answer="中" * MAX_CHARS),
    event("r1", answer="中" * (MAX_CHARS + 1)),  # oversized by characters, far more bytes
    event("r1", answer='line\nbreak "quoted" \\ back\u2028'),
    event("r1", answer=None),
    event("r1", answer=12),
    event(""),
    event("   "),
    event("r1", question=["not", "text"]),
    event("r1", docs=[]),
    event("r1", docs=None),
    event("r1", docs={"content": "x"}),
    event("r1", docs=[{"content": "x"}]),  # no id, no score
    event("r1", docs=[{"id": 7, "content": "x", "score": 1}]),
    event("r1", docs=[{"id": True, "content": "x", "score": 0.5}]),
    event("r1", docs=[{"id": 1.5, "content": "x", "score": 0.5}]),
    event("r1", docs=[{"id": "d", "content": None, "score": 0.5}]),
    event("r1", docs=[{"id": "d", "content": 3, "score": 0.5}]),
    event("r1", docs=[{"id": "d", "content": "x", "score": "0.5"}]),
    event("r1", docs=[{"id": "d", "content": "x", "score": False}]),
    event("r1", docs=[{"id": "d", "content": "中" * (MAX_CHARS + 1), "score": 0.5}]),
    event("r1", docs=[{"id": "d", "content": "tab\there \\u escaped", "score": 0.5}, "not a doc"]),
    event("r1", timestamp="2026-11-19T23:30:00-02:00"),
    event("r1", timestamp="2026-11-19 08:00:00"),
    event("r1", timestamp="2026-11-19T08:00:00"),
    event("r1", timestamp="2026-11-19T08:00:00.5+05:30"),
    event("r1", timestamp="2026-11-19T08:00:00.123456Z"),
    event("r1", timestamp="2026-11-19T08:00:00.1234567Z"),
    event("r1", timestamp="2026-11-19T08:00:00+0530"),
    event("r1", timestamp="2026-11-19T08:00:00z"),
    event("r1", timestamp=" 2026-11-19T08:00:00Z"),
    event("r1", timestamp="2026-02-29T08:00:00Z"),  # not a leap year
    event("r1", timestamp="2028-02-29T08:00:00Z"),
    event("r1", timestamp="2026-11-19T24:00:00Z"),
    event("r1", timestamp="2026-11-19T08:00:00+24:00"),
    event("r1", timestamp="0001-01-01T00:30:00+01:00"),  # before the first day in UTC
    event("r1", timestamp="9999-12-31T23:30:00-01:00"),  # after the last
    event("r1", timestamp="2026-W47-4T08:00:00Z"),
    event("r1", timestamp="yesterday"),
    event("r1", timestamp=None),
    event("r1", timestamp=1763539200),
    event("r1", score=1),
    event("r1", score=0),
    event("r1", score=1.0000001),
    event("r1", score=-0.1),
    event("r1", score="0.5"),
    event("r1", score=True),
    event("r1", labels=[" Factuality_Error ", "factuality_error", "", "LOW_relevance"]),
    event("r1", labels="factuality_error"),
    event("r1", labels=[1]),
    event("r1", labels=None),
    with_evaluation(checks={"a": 1, "b": 0.5}),
    with_evaluation(checks={"a": True}),
    with_evaluation(checks=[1]),
    with_evaluation(checks=None),
    with_evaluation(checks={"a": None, "b": 0.5}),
    with_evaluation(checks={"a": None}),
    with_evaluation(suggestion=None),
    with_evaluation(suggestion=5),
    with_evaluation(suggestion="s" * (MAX_CHARS + 1)),
    with_evaluation(suggestion="建议\n\"引用\""),
    with_evaluation(suggestion=["a"]),
    {**event("r1"), "extra": {"nested": [1, 2]}},
]

RAW_CASES = [
    b'{"request_id": "r1"',
    b"[1, 2]",
    b"null",
    b'"text"',
    orjson.dumps(event("r1")).replace("三天".encode(), b"\xff\xfe"),  # invalid UTF-8 in the answer
    orjson.dumps(event("r1")).replace("退款在".encode(), b"\xc3\x28"),  # ... and in a doc
    orjson.dumps(event("r1")).replace(b'"score":0.9', b'"score":1e400'),
    orjson.dumps(event("r1")).replace(b'"score":0.9', b'"score":100000000000000000000000000000'),
    orjson.dumps(event("r1")).replace("三天".encode(), b"\\ud800"),  # lone surrogate escape
    orjson.dumps(event("r1")).replace(b'"answer":', b'"answer":"first","answer":'),  # duplicate key
    orjson.dumps(event("r1")).replace(b"{", b' \t{ ', 1) + b"  ",
    b'{"x":' * 1000 + b"1" + b"}" * 1000,  # nested too deep
    orjson.dumps(event("r1")).replace(b'"timestamp"', b'"extra":' + b"[" * 1000 + b"]" * 1000 + b',"timestamp"'),
    orjson.dumps(event("r1")).replace(b'"timestamp"', b'"extra":' + b"[" * 63 + b"]" * 63 + b',"timestamp"'),
    orjson.dumps(event("r1")).replace(b'"timestamp"', b'"extra":' + b"[" * 64 + b"]" * 64 + b',"timestamp"'),
    orjson.dumps(event("r1")).replace(b'"id":"d1"', b'"id":"d1","extra":' + b"[" * 1000 + b"]" * 1000),
    orjson.dumps(event("r1")).replace(b'"answer":"', b'"answer":' + b"[" * 1000 + b"]" * 1000 + b',"x":"'),
]


def all_cases() -> list[bytes]:
    generated = list(day_lines(date(2026, 11, 19), GeneratorSettings(events_per_day=400, malformed_share=0.5, seed=11)))
    edges = [orjson.dumps(case).replace(b'"r1"', f'"edge-{n}"'.encode()) for n, case in enumerate(EDGE_CASES)]
    return edges + RAW_CASES + [line.rstrip(b"\n") for line in generated]


def test_fast_path_accepts_only_what_the_rule_book_accepts_with_identical_rows():
    raws = all_cases()
    fast = fastpath.decode_lines(raws, ["f"] * len(raws), list(range(len(raws))), MAX_CHARS)
    fast_rows = fast.batch.to_pylist()
    assert sorted(fast.positions + fast.undecided) == list(range(len(raws)))
    for position, row in zip(fast.positions, fast_rows):
        verdict = ingest.classify(SourceLine("f", position, raws[position]), MAX_CHARS)
        assert isinstance(verdict, dict), (raws[position], verdict)
        expected = tables.raw_events_batch([verdict], ["f"], [position]).to_pylist()[0]
        assert row == expected, raws[position]


def test_fast_path_settles_well_formed_events_itself():
    raws = [line.rstrip(b"\n") for line in day_lines(date(2026, 11, 19), GeneratorSettings(events_per_day=300, seed=5))]
    raws.append(orjson.dumps(event("r-escapes", answer='a "quoted"\nanswer', docs=[{"content": "tab\tand \\"}])))
    fast = fastpath.decode_lines(raws, ["f"] * len(raws), list(range(len(raws))), 32768)
    assert fast.undecided == []
    assert fast.batch.num_rows == len(raws)
    assert fast.batch.column("answer")[-1].as_py() == 'a "quoted"\nanswer'
    assert fast.batch.column("docs")[-1].as_py()[0]["content"] == "tab\tand \\"


@pytest.mark.parametrize("batch_size", [1, 7, 10_000])
def test_ingest_gives_the_same_rows_and_dead_letter_as_the_rule_book_alone(batch_size):
    raws = all_cases()

    def run(lines):
        counts = ingest.IngestCounts()
        batches = list(ingest.ingest(lines, MAX_CHARS, batch_size, counts))
        accepted = [row for b in batches if b.accepted is not None for row in b.accepted.to_pylist()]
        dead = [row for b in batches if b.dead_letter is not None for row in b.dead_letter.to_pylist()]
        return counts, accepted, dead

    fast = run([SourceLine("f", n, raw) for n, raw in enumerate(raws, 1)])
    # Lines that arrive already decoded (as from a database) skip the fast path entirely.
    rule_book = run([SourceLine("f", n, raw, ingest.decode_json(raw)) for n, raw in enumerate(raws, 1)])
    assert fast == rule_book
    assert fast[0].reconciles() and fast[0].accepted > 150 and fast[0].rejected > 150


def test_deep_lines_are_left_to_the_rule_book_and_extra_fields_decoded_here():
    shallow = orjson.dumps({**event("r1"), "extra": [[[[[[[[[[1]]]]]]]]]]})
    deep = [
        b'{"x":' * 1000 + b"1" + b"}" * 1000,
        shallow.replace(b"[[[[[[[[[[1]]]]]]]]]]", b"[" * 1000 + b"]" * 1000),
        shallow.replace(b"[[[[[[[[[[1]]]]]]]]]]", b"[" * events.MAX_JSON_DEPTH + b"]" * events.MAX_JSON_DEPTH),
    ]
    raws = [shallow, *deep]
    fast = fastpath.decode_lines(raws, ["f"] * len(raws), list(range(len(raws))), MAX_CHARS)
    assert fast.positions == [0] and fast.undecided == [1, 2, 3]
    for raw in deep:
        verdict = ingest.classify(SourceLine("f", 1, raw), MAX_CHARS)
        assert verdict == events.Rejection(events.INVALID_JSON, events.TOO_DEEP_DETAIL)


def test_the_blank_characters_are_exactly_those_python_strips():
    characters = [chr(c) for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF]
    not_blank = pc.match_substring_regex(pa.array(characters), fastpath._NOT_BLANK).to_pylist()
    assert [c for c, keeps in zip(characters, not_blank) if keeps == c.isspace()] == []


def test_usual_timestamp_shapes_are_read_column_wise_and_the_rest_left_to_the_rule_book():
    usual = ["2026-11-19T08:00:00Z", "2026-11-19T08:00:00.5+05:30", "2026-11-19T23:59:59.123456-08:00", "2026-11-19T08:00:00"]
    unusual = ["2026-11-19 08:00:00Z", " 2026-11-19T08:00:00Z", "2026-02-29T08:00:00Z", "2026-11-19T08:00:00+0530"]
    raws = [orjson.dumps(event(f"r{n}", timestamp=stamp)) for n, stamp in enumerate(usual + unusual)]
    fast = fastpath.decode_lines(raws, ["f"] * len(raws), list(range(len(raws))), MAX_CHARS)
    assert fast.positions == [0, 1, 2, 3]
    assert fast.undecided == [4, 5, 6, 7]
    expected = [events.parse_timestamp(stamp) for stamp in usual]
    assert fast.batch.column("timestamp").to_pylist() == expected
