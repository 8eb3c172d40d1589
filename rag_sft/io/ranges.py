"""Cutting a file into byte ranges that end at line ends, so workers can read lines apart."""

from __future__ import annotations

import mmap
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DEFAULT_RANGE_BYTES = 16 << 20


def line_aligned_ranges(
    path: Path, range_bytes: int = DEFAULT_RANGE_BYTES, start: int = 0, end: int | None = None
) -> list[tuple[int, int]]:
    """(start, end) byte ranges of about `range_bytes` covering [start, end) of the file (the
    whole file by default), each ending after a newline (or at `end`)."""
    end = path.stat().st_size if end is None else end
    ranges = []
    with path.open("rb") as handle:
        while start < end:
            cut = min(start + range_bytes, end)
            if cut < end:
                handle.seek(cut)
                cut = min(cut + len(handle.readline()), end)  # to the end of the line the cut fell in
            ranges.append((start, cut))
            start = cut
    return ranges


@dataclass
class RangeLines:
    """The non-blank lines of a range, as views of the memory-mapped file (no copy per line)."""

    lines: list[memoryview | bytes]  # without newline and trailing CRs
    numbers: list[int]  # 1-based line number of each within the range
    offsets: np.ndarray  # byte offset of each from the start of the range
    ends: np.ndarray  # byte offset after each, its newline included
    count: int  # lines in the range, blank ones included


_WHITESPACE = np.zeros(256, dtype=bool)
_WHITESPACE[list(b" \t\n\r\x0b\x0c")] = True  # what bytes.strip() removes


def mapped_lines(path: str | Path, start: int, end: int) -> RangeLines:
    """The lines of a range of a file, found with numpy on a read-only memory map.

    Landing files may grow while they are read, but must not shrink: a page cut off a mapped
    file ends the worker (the run then fails; nothing is half written).
    """
    mapped, data, starts, ends = _mapped_range(path, start, end)
    # A line that starts with a non-space byte is not blank; the rare others are looked at as bytes.
    first = np.where(ends > starts, data[np.minimum(starts, max(len(data) - 1, 0))], ord(" ")) if len(data) else starts
    carriage_return = (ends > starts) & (data[np.maximum(ends - 1, 0)] == ord("\r")) if len(data) else starts
    odd = _WHITESPACE[first] | carriage_return
    view = memoryview(mapped)[start:end]
    lines: list[memoryview | bytes] = []
    numbers: list[int] = []
    kept: list[int] = []
    for index, (line_start, line_end, look) in enumerate(zip(starts.tolist(), ends.tolist(), odd.tolist())):
        line: memoryview | bytes = view[line_start:line_end]
        if look:
            line = bytes(line).rstrip(b"\r")
            if not line.strip():
                continue
        lines.append(line)
        numbers.append(index + 1)
        kept.append(index)
    return RangeLines(lines, numbers, starts[kept], np.minimum(ends[kept] + 1, len(data)), len(starts))


def mapped_raw_lines(path: str | Path, start: int, end: int) -> list[memoryview]:
    """Every line of a range (blank ones too), without its newline, as a view of the mapped file."""
    mapped, _, starts, ends = _mapped_range(path, start, end)
    view = memoryview(mapped)[start:end]
    return [view[line_start:line_end] for line_start, line_end in zip(starts.tolist(), ends.tolist())]


def _mapped_range(path: str | Path, start: int, end: int):
    """The file mapped read-only, the range's bytes as a numpy view, and each line's start and end."""
    with open(path, "rb") as handle:
        mapped = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
    data = np.frombuffer(mapped, dtype=np.uint8, count=end - start, offset=start)
    ends = np.flatnonzero(data == ord("\n"))
    if len(data) and (not len(ends) or ends[-1] != len(data) - 1):
        ends = np.append(ends, len(data))  # the file's last line has no newline
    starts = np.concatenate([[0], ends[:-1] + 1]).astype(np.int64)
    return mapped, data, starts, ends
