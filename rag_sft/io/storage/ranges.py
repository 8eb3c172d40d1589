"""Cutting a file into byte ranges that end at line ends, so workers can read lines apart."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rag_sft.io.storage.location import Location, range_view, read_range, version

DEFAULT_RANGE_BYTES = 16 << 20
_LINE_SEARCH_BYTES = 64 << 10  # read at a cut to find the end of its line


def line_aligned_ranges(
    path: Location, range_bytes: int = DEFAULT_RANGE_BYTES, start: int = 0, end: int | None = None
) -> list[tuple[int, int]]:
    """(start, end) byte ranges of about `range_bytes` covering [start, end) of the file (the
    whole file by default), each ending after a newline (or at `end`)."""
    end = version(path).size if end is None else end
    ranges = []
    while start < end:
        cut = min(start + range_bytes, end)
        if cut < end:
            cut = _after_line_end(path, cut, end)
        ranges.append((start, cut))
        start = cut
    return ranges


def _after_line_end(path: Location, position: int, end: int) -> int:
    """The offset after the first newline at or after `position` (`end` when none is before it)."""
    while position < end:
        block = read_range(path, position, min(position + _LINE_SEARCH_BYTES, end))
        newline = block.find(b"\n")
        if newline >= 0:
            return position + newline + 1
        position += len(block)
    return end


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


def mapped_lines(path: str | Location, start: int, end: int) -> RangeLines:
    """The lines of a range of a file, found with numpy on a read-only memory map (a local file)
    or on the range's bytes (an object: one ranged GET).

    Landing files may grow while they are read, but must not shrink: a page cut off a mapped
    file ends the worker (the run then fails; nothing is half written).
    """
    view, data, starts, ends = _mapped_range(path, start, end)
    # A line that starts with a non-space byte is not blank; the rare others are looked at as bytes.
    first = np.where(ends > starts, data[np.minimum(starts, max(len(data) - 1, 0))], ord(" ")) if len(data) else starts
    carriage_return = (ends > starts) & (data[np.maximum(ends - 1, 0)] == ord("\r")) if len(data) else starts
    odd = _WHITESPACE[first] | carriage_return
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


def mapped_raw_lines(path: str | Location, start: int, end: int) -> list[memoryview]:
    """Every line of a range (blank ones too), without its newline, as a view of the mapped file."""
    view, _, starts, ends = _mapped_range(path, start, end)
    return [view[line_start:line_end] for line_start, line_end in zip(starts.tolist(), ends.tolist())]


def _mapped_range(path: str | Location, start: int, end: int):
    """The range's bytes (see `range_view`), the same as a numpy view, and each line's start and end."""
    view = range_view(path, start, end)
    data = np.frombuffer(view, dtype=np.uint8)
    ends = np.flatnonzero(data == ord("\n"))
    if len(data) and (not len(ends) or ends[-1] != len(data) - 1):
        ends = np.append(ends, len(data))  # the file's last line has no newline
    starts = np.concatenate([[0], ends[:-1] + 1]).astype(np.int64)
    return view, data, starts, ends
