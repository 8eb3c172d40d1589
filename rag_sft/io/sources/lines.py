"""What the sources share about lines: which day a line belongs to, and the error a source
that cannot be read at all raises.

Both sources (`landing.LandingFolder`, `sql.SqlTable`) yield `SourceLine`s for one UTC day in a
stable order (file path then line number, or row id), so "keep the first duplicate" and
byte-identical re-runs hold.

Which day a line belongs to: the UTC date of its `timestamp`. A line whose timestamp cannot
be read (broken JSON, a missing or garbled timestamp) belongs to the day of the nearest
readable line before it in the same file or table (after it, when none is before; for a file
with no readable line at all, the date in the file's name, else the file's modification
date). Every line thus lands in exactly one day, whichever day is materialized first.
"""

from __future__ import annotations

import os
import re
from datetime import UTC, date, datetime
from typing import Any

import msgspec
import numpy as np

from rag_sft.core import fastpath
from rag_sft.core.events import TIMESTAMP_OUT_OF_RANGE, Rejection, timestamp_date
from rag_sft.core.ingest import SourceLine, decode_json
from rag_sft.io.storage.location import Location, version


class SourceUnavailable(Exception):
    """The configured source cannot be read at all (missing folder, unreachable database)."""


_TIMESTAMP_KEY = b'"timestamp"'
_TIMESTAMP_VALUE = re.compile(rb'"timestamp"\s*:\s*"([0-9][0-9T:.+\-Z ]{7,40})"')
_DATE_IN_NAME = re.compile(r"(\d{4})-(\d{2})-(\d{2})")


class _Stamped(msgspec.Struct, gc=False):
    timestamp: str


_STAMP_DECODER = msgspec.json.Decoder(_Stamped)


def quick_line_date(raw: bytes) -> date | None:
    """The day of a line from its `"timestamp"` text without decoding the whole line.

    Only a key of the line's outermost object places it: the key must occur exactly once and
    stand at depth 1. Inside JSON strings quotes are escaped, so the pattern cannot match text
    inside a value. None means "decode the line to find out".
    """
    start = raw.find(_TIMESTAMP_KEY)
    if start < 0 or raw.find(_TIMESTAMP_KEY, start + len(_TIMESTAMP_KEY)) >= 0:
        return None
    match = _TIMESTAMP_VALUE.match(raw, start)
    if match is None or not _at_top_level(raw, start):
        return None
    return timestamp_date(match.group(1).decode("ascii"))


_BRACKET = re.compile(rb"[{}\[\]]")
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')


def _at_top_level(raw: bytes, start: int) -> bool:
    """Whether the only `"timestamp"` key of a line, at `start`, belongs to its outermost object
    (a nested one, in `evaluation` or a doc, places nothing). Cheap when nothing but the opening
    brace comes before it; else a decoder that reads only the top-level timestamp says whether
    there is one; for a line that is not JSON, the brackets outside strings before the key are
    counted (as far as a broken line goes)."""
    opening = len(raw) - len(raw.lstrip())
    if raw[opening : opening + 1] != b"{":
        return False
    if _BRACKET.search(raw, opening + 1, start) is None:
        return True
    try:
        _STAMP_DECODER.decode(raw)
        return True
    except msgspec.ValidationError:  # valid JSON without a top-level string timestamp
        return False
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        pass
    outside = _JSON_STRING.sub(b"", raw[opening:start])
    return outside.count(b"{") + outside.count(b"[") - outside.count(b"}") - outside.count(b"]") == 1


def line_date(line: SourceLine) -> date | None:
    """The UTC day of a file line; decodes it (and keeps the result) only when the quick look fails."""
    line_day = quick_line_date(line.raw)
    if line_day is None:
        line.decoded = decode_json(line.raw)
        line_day = _decoded_date(line.decoded)
    return line_day


EPOCH = date(1970, 1, 1)
UNDATED = np.iinfo(np.int64).min


def line_days(raws: list, known: tuple[list[int], np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """The UTC day of each line (days since 1970-01-01; UNDATED where none can be read), by the
    rule of `line_date`, for many lines at once: a decoder that reads only the top-level
    timestamp, Arrow for the usual ISO shapes, `line_date` for the rest.

    `known`: (positions, epoch micros, read) of timestamps the caller has parsed already with
    `fastpath.parse_timestamps` (ingest decodes every line anyway), so only the rest are read.
    """
    days = np.full(len(raws), UNDATED, dtype=np.int64)
    if known is not None:
        positions, micros, read = known
        days[np.asarray(positions, dtype=np.int64)[read]] = micros[read] // fastpath.MICROS_PER_DAY
        todo = np.flatnonzero(days == UNDATED).tolist()
    else:
        todo = range(len(raws))
    stamps: list[str] = []
    stamped: list[int] = []
    for position in todo:
        try:
            stamps.append(_STAMP_DECODER.decode(raws[position]).timestamp)
        except (msgspec.MsgspecError, UnicodeDecodeError, RecursionError):
            continue
        stamped.append(position)
    micros, read = fastpath.parse_timestamps(stamps)
    days[np.asarray(stamped, dtype=np.int64)[read]] = micros[read] // fastpath.MICROS_PER_DAY
    for position in np.flatnonzero(days == UNDATED).tolist():
        line_day = line_date(SourceLine("", 0, bytes(raws[position])))
        if line_day is not None:
            days[position] = (line_day - EPOCH).days
    return days


def out_of_range(days: np.ndarray, valid: tuple[date, date] | None) -> np.ndarray:
    """Which dated lines fall outside the days events may have (`valid`: first and last, e.g.
    the partitions' start and tomorrow): they are placed like undated lines and rejected as
    `timestamp_out_of_range` there, so a 9999-12-31 event is counted on a real day."""
    if valid is None:
        return np.zeros(len(days), dtype=bool)
    first, last = ((day - EPOCH).days for day in valid)
    return (days != UNDATED) & ((days < first) | (days > last))


def out_of_range_rejection(valid: tuple[date, date]) -> Rejection:
    return Rejection(
        TIMESTAMP_OUT_OF_RANGE,
        f"timestamp outside the days events may have ({valid[0]} .. {valid[1]}; the start is RAG_SFT_START_DATE)",
    )


def source_name(path: Location, root: Location) -> str:
    """The file's path under the landing folder as text; bytes of a name that are not UTF-8 are
    escaped (\\xe9) as raw text is, so the name can be stored and printed."""
    return os.fsencode(path.relative_to(root)).decode("utf-8", "backslashreplace")


def _decoded_date(decoded: Any) -> date | None:
    if isinstance(decoded, dict):
        value = decoded.get("timestamp")
        if isinstance(value, (str, datetime)):
            return timestamp_date(value)
    return None


# JSON Lines by name: *.jsonl or *.ndjson in any case, a rotated log's copies (events.jsonl.1,
# events.jsonl.2.gz, as logrotate names them), plain or compressed.
DEFAULT_LANDING_PATTERN = r"(?i)\.(jsonl|ndjson)(\.\d+)?(\.gz|\.zst)?$"


def day_of_file(path: Location) -> date:
    match = _DATE_IN_NAME.search(path.name)
    if match:
        try:
            return date(int(match[1]), int(match[2]), int(match[3]))
        except ValueError:
            pass
    return datetime.fromtimestamp(version(path).mtime_ns / 1e9, tz=UTC).date()
