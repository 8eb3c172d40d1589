"""From source lines to accepted events and dead-letter rows, with counts that reconcile.

read = accepted + duplicates + rejected, for every batch and so for every day.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson
import pyarrow as pa

from rag_sft.core import events, tables
from rag_sft.core.events import Rejection


class _Marker:
    def __init__(self, name: str):
        self.name = name

    def __repr__(self) -> str:
        return self.name


UNPARSED = _Marker("UNPARSED")
"""The line has not been decoded yet."""
UNDECODABLE = _Marker("UNDECODABLE")
"""The line is not valid JSON (or not valid UTF-8)."""


@dataclass
class SourceLine:
    source: str  # file path relative to the landing folder, or "sql:<table>"
    line: int  # 1-based line number in the file, or the row id in the table
    raw: bytes | str
    decoded: Any = UNPARSED  # the decoded JSON, UNDECODABLE, or a Rejection found by the source


def decode_json(raw: bytes | str) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return UNDECODABLE


@dataclass
class IngestCounts:
    read: int = 0
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    reject_reasons: Counter = field(default_factory=Counter)

    def reconciles(self) -> bool:
        return self.read == self.accepted + self.duplicates + self.rejected


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
        return Rejection(events.INVALID_JSON, str(error))
    return Rejection(events.INVALID_JSON, "not valid JSON")


def raw_text(raw: bytes | str) -> str:
    """The line as text for the dead letter; undecodable bytes kept as \\x escapes."""
    if isinstance(raw, str):
        return raw
    return raw.decode("utf-8", errors="backslashreplace")


def ingest(
    lines: Iterable[SourceLine], max_field_chars: int, batch_size: int, counts: IngestCounts
) -> Iterator[IngestBatch]:
    """Validate, normalize and de-duplicate (first request_id wins) lines in bounded batches."""
    seen: set[str] = set()
    accepted: list[dict] = []
    sources: list[str] = []
    line_numbers: list[int] = []
    dead: list[dict] = []
    for line in lines:
        counts.read += 1
        result = classify(line, max_field_chars)
        if isinstance(result, Rejection):
            counts.rejected += 1
            counts.reject_reasons[result.reason] += 1
            dead.append(_dead_row(line, "rejected", result, _request_id_of(line)))
        elif result["request_id"] in seen:
            counts.duplicates += 1
            duplicate = Rejection(events.DUPLICATE_REQUEST_ID, f"request_id {result['request_id']!r} seen earlier this day")
            dead.append(_dead_row(line, "duplicate", duplicate, result["request_id"]))
        else:
            seen.add(result["request_id"])
            counts.accepted += 1
            accepted.append(result)
            sources.append(line.source)
            line_numbers.append(line.line)
        if len(accepted) >= batch_size or len(dead) >= batch_size:
            yield _batch(accepted, sources, line_numbers, dead)
            accepted, sources, line_numbers, dead = [], [], [], []
    if accepted or dead:
        yield _batch(accepted, sources, line_numbers, dead)


def _batch(accepted, sources, line_numbers, dead) -> IngestBatch:
    return IngestBatch(
        tables.raw_events_batch(accepted, sources, line_numbers) if accepted else None,
        tables.rejected_batch(dead) if dead else None,
    )


def _request_id_of(line: SourceLine) -> str | None:
    decoded = line.decoded
    if isinstance(decoded, dict) and isinstance(decoded.get("request_id"), str):
        return decoded["request_id"]
    return None


def _dead_row(line: SourceLine, outcome: str, rejection: Rejection, request_id: str | None) -> dict:
    return {
        "source": line.source,
        "source_line": line.line,
        "outcome": outcome,
        "reason": rejection.reason,
        "detail": rejection.detail,
        "request_id": request_id,
        "raw_text": raw_text(line.raw),
    }
