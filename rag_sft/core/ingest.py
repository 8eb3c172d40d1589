"""From source lines to accepted events and dead-letter rows, with counts that reconcile.

read = accepted + duplicates + rejected + erased, for every batch and so for every day
(`erased`: events of requests erased on request, see `core/erasure.py`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson
import pyarrow as pa

from rag_sft.core import events, fastpath, pii, tables
from rag_sft.core.events import Rejection


class _Marker:
    def __init__(self, name: str):
        self.name = name

    def __repr__(self) -> str:
        return self.name

    def __reduce__(self) -> str:
        return self.name  # unpickles as the module's singleton, so `is` checks hold in workers


UNPARSED = _Marker("UNPARSED")
"""The line has not been decoded yet."""
UNDECODABLE = _Marker("UNDECODABLE")
"""The line is not valid JSON (or not valid UTF-8, or nested too deep)."""


@dataclass
class SourceLine:
    source: str  # file path relative to the landing folder, or "sql:<table>" (see `sources.row_location`)
    line: int | None  # 1-based line number in the file, or the row's integer id in the table
    raw: bytes | str
    decoded: Any = UNPARSED  # the decoded JSON, UNDECODABLE, or a Rejection found by the source


def decode_json(raw: bytes | str) -> Any:
    """The decoded JSON, or UNDECODABLE: not JSON, or nested deeper than MAX_JSON_DEPTH (a
    value that deep would break whatever walks it recursively later)."""
    try:
        decoded = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return UNDECODABLE
    return decoded if events.json_depth(decoded) <= events.MAX_JSON_DEPTH else UNDECODABLE


@dataclass
class IngestCounts:
    read: int = 0
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    reject_reasons: Counter = field(default_factory=Counter)
    erased: int = 0

    def reconciles(self) -> bool:
        return self.read == self.accepted + self.duplicates + self.rejected + self.erased


@dataclass
class IngestBatch:
    accepted: pa.RecordBatch | None
    dead_letter: pa.RecordBatch | None


def classify(line: SourceLine, max_field_chars: int) -> dict | Rejection:
    """The normalized event of a line, or why it is rejected."""
    if line.decoded is UNPARSED:
        line.decoded = decode_json(line.raw)
    decoded = line.decoded
    if isinstance(decoded, Rejection):
        return decoded
    if decoded is UNDECODABLE:
        return _undecodable_reason(line.raw)
    try:
        return events.normalize_event(decoded, max_field_chars)
    except Rejection as rejection:
        return rejection


def _undecodable_reason(raw: bytes | str) -> Rejection:
    if isinstance(raw, bytes):
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as error:
            return Rejection(events.INVALID_UTF8, f"byte {error.start} is not valid UTF-8")
    try:
        orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        if str(error).startswith("depth limit exceeded"):  # orjson's own limit, deeper than ours
            return Rejection(events.INVALID_JSON, events.TOO_DEEP_DETAIL)
        return Rejection(events.INVALID_JSON, str(error))
    return Rejection(events.INVALID_JSON, events.TOO_DEEP_DETAIL)  # it parses: it was too deep


def raw_text(raw: bytes | str) -> str:
    """The line as text for the dead letter; undecodable bytes kept as \\x escapes."""
    if isinstance(raw, str):
        return raw
    return raw.decode("utf-8", errors="backslashreplace")


@dataclass
class ChunkResult:
    """The verdict on one chunk of lines before de-duplication (which needs the whole day)."""

    accepted: pa.RecordBatch | None  # RAW_EVENTS rows of the valid lines, in line order
    accepted_positions: list[int]  # where each accepted row sits in the chunk
    rejected: list[tuple[int, Rejection, str | None]]  # (position, why, request_id if readable)


def classify_chunk(lines: list[SourceLine], max_field_chars: int) -> ChunkResult:
    """Validate and normalize a chunk of lines: raw JSON lines through the fast path, the
    rest (and whatever the fast path is unsure of) through the rule book, in line order."""
    fresh = [p for p, line in enumerate(lines) if line.decoded is UNPARSED and isinstance(line.raw, bytes)]
    fast = fastpath.decode_lines(
        [lines[p].raw for p in fresh], [lines[p].source for p in fresh], [lines[p].line for p in fresh], max_field_chars
    )
    fast_positions = [fresh[p] for p in fast.positions]
    settled = set(fast_positions)
    rest = [(position, line) for position, line in enumerate(lines) if position not in settled]
    return with_rule_book(fast.batch, fast_positions, rest, max_field_chars)


def with_rule_book(
    fast_batch: pa.RecordBatch | None, fast_positions: list[int], rest: list[tuple[int, SourceLine]], max_field_chars: int
) -> ChunkResult:
    """The rule book's verdict on the `rest` (position, line) merged, in line order, with the
    rows the fast path accepted at `fast_positions`."""
    slow_events: list[dict] = []
    slow_positions: list[int] = []
    rejected: list[tuple[int, Rejection, str | None]] = []
    for position, line in rest:
        result = classify(line, max_field_chars)
        if isinstance(result, Rejection):
            rejected.append((position, result, _request_id_of(line)))
        else:
            slow_events.append(result)
            slow_positions.append(position)
    if not slow_events:
        return ChunkResult(fast_batch, fast_positions, rejected)
    slow_lines = dict(rest)
    slow = tables.raw_events_batch(
        slow_events, [slow_lines[p].source for p in slow_positions], [slow_lines[p].line for p in slow_positions]
    )
    if fast_batch is None:
        return ChunkResult(slow, slow_positions, rejected)
    # Both paths accepted rows: put them back in line order.
    positions = fast_positions + slow_positions
    order = sorted(range(len(positions)), key=positions.__getitem__)
    merged = pa.Table.from_batches([fast_batch, slow]).take(pa.array(order)).combine_chunks().to_batches()[0]
    return ChunkResult(merged, [positions[i] for i in order], rejected)


@dataclass
class JudgedChunk:
    """Lines judged and ready for de-duplication, which needs the whole day in order."""

    read: int  # lines this chunk accounts for
    accepted: pa.RecordBatch | None  # RAW_EVENTS rows, in line order
    accepted_keys: list[int]  # the line-order key of each accepted row
    raw_of_accepted: Callable[[int], bytes | str]  # the raw line of accepted row i (for a duplicate)
    dead: list[tuple[int, dict]] = field(default_factory=list)  # (line-order key, REJECTED_EVENTS row)


def judge_lines(lines: list[SourceLine], max_field_chars: int) -> JudgedChunk:
    result = classify_chunk(lines, max_field_chars)
    dead = [
        (position, dead_row(lines[position], "rejected", rejection, request_id))
        for position, rejection, request_id in result.rejected
    ]
    accepted_lines = [lines[p] for p in result.accepted_positions]
    return JudgedChunk(len(lines), result.accepted, result.accepted_positions, lambda i: accepted_lines[i].raw, dead)


def ingest(
    lines: Iterable[SourceLine], max_field_chars: int, batch_size: int, counts: IngestCounts
) -> Iterator[IngestBatch]:
    """Validate, normalize and de-duplicate (first request_id wins) lines in bounded batches."""
    return deduplicated((judge_lines(chunk, max_field_chars) for chunk in batched(lines, batch_size)), counts)


FirstDays = Callable[[list[str]], dict[str, str]]


def deduplicated(chunks: Iterable[JudgedChunk], counts: IngestCounts, first_days: FirstDays | None = None) -> Iterator[IngestBatch]:
    """The day's judged chunks, in line order, with each request_id kept only the first time:
    the first line of the day, unless `first_days` (request_ids -> the earliest earlier day that
    exported them) says an earlier day holds it."""
    seen: set[str] = set()
    for chunk in chunks:
        earlier = first_days(chunk.accepted.column("request_id").to_pylist()) if first_days and chunk.accepted else {}
        yield deduplicate(chunk, seen, counts, earlier)


def batched(lines: Iterable[SourceLine], size: int) -> Iterator[list[SourceLine]]:
    chunk: list[SourceLine] = []
    for line in lines:
        chunk.append(line)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def deduplicate(chunk: JudgedChunk, seen: set[str], counts: IngestCounts, earlier: dict[str, str] | None = None) -> IngestBatch:
    """Drop request_ids seen earlier this day (`seen` carries them across chunks) or on an earlier
    day (`earlier`: request_id -> that day) into the dead letter, and count every line once."""
    earlier = earlier or {}
    counts.read += chunk.read
    dead = list(chunk.dead)
    for _, row in chunk.dead:
        counts.rejected += 1
        counts.reject_reasons[row["reason"]] += 1
    accepted = chunk.accepted
    if accepted is not None:
        keep = []
        for index, (key, request_id) in enumerate(zip(chunk.accepted_keys, accepted.column("request_id").to_pylist())):
            first_day = earlier.get(request_id)
            first = request_id not in seen and first_day is None
            keep.append(first)
            if first:
                seen.add(request_id)
                continue
            counts.duplicates += 1
            where = f"first seen on {first_day}" if first_day else "seen earlier this day"
            duplicate = Rejection(events.DUPLICATE_REQUEST_ID, f"request_id {request_id!r} {where}")
            line = SourceLine(accepted["source"][index].as_py(), accepted["source_line"][index].as_py(), chunk.raw_of_accepted(index))
            dead.append((key, dead_row(line, "duplicate", duplicate, request_id)))
        if not all(keep):
            accepted = accepted.filter(pa.array(keep))
        counts.accepted += accepted.num_rows
        if accepted.num_rows == 0:
            accepted = None
    dead.sort(key=lambda item: item[0])  # the dead letter in line order
    return IngestBatch(accepted, tables.rejected_batch([row for _, row in dead]) if dead else None)


def _request_id_of(line: SourceLine) -> str | None:
    """A rejected line's request_id, stripped as an accepted one is (so an erasure finds it)."""
    decoded = line.decoded
    if isinstance(decoded, dict) and isinstance(decoded.get("request_id"), str):
        return decoded["request_id"].strip() or None
    return None


def dead_row(line: SourceLine, outcome: str, rejection: Rejection, request_id: str | None) -> dict:
    return {
        "source": line.source,
        "source_line": line.line,
        "outcome": outcome,
        "reason": rejection.reason,
        "detail": rejection.detail,
        "request_id": request_id,
        "raw_text": raw_text(line.raw),
    }


RAW_PERSONAL_TEXTS = ("question", "answer", "suggestion")


def redacted(batch: IngestBatch) -> IngestBatch:
    """The batch with personal data replaced by placeholders (pii.redact) in the accepted events'
    texts, labels and docs and in the dead letter's raw text and detail, and request_ids and doc
    ids holding personal data by their pseudonyms: with `redact_raw`, kept nowhere."""
    accepted = batch.accepted
    if accepted is not None:
        accepted, _ = pii.redact_batch(accepted, RAW_PERSONAL_TEXTS, docs="docs", ids=("request_id",), label_lists=("labels",))
    dead_letter = batch.dead_letter
    if dead_letter is not None:
        dead_letter, _ = pii.redact_batch(dead_letter, ("raw_text", "detail"), ids=("request_id",))
    return IngestBatch(accepted, dead_letter)
