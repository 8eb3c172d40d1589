"""Cutting a file into byte ranges that end at line ends, so workers can read lines apart."""

from __future__ import annotations

from pathlib import Path

DEFAULT_RANGE_BYTES = 16 << 20


def line_aligned_ranges(path: Path, range_bytes: int = DEFAULT_RANGE_BYTES) -> list[tuple[int, int]]:
    """(start, end) byte ranges of about `range_bytes` covering the file, each ending after a
    newline (or at the end of the file)."""
    size = path.stat().st_size
    ranges = []
    start = 0
    with path.open("rb") as handle:
        while start < size:
            end = min(start + range_bytes, size)
            if end < size:
                handle.seek(end)
                handle.readline()  # to the end of the line the cut fell in
                end = handle.tell()
            ranges.append((start, end))
            start = end
    return ranges


def read_lines(path: str | Path, start: int, end: int) -> list[bytes]:
    """The lines of a range, without their newlines."""
    with open(path, "rb") as handle:
        handle.seek(start)
        data = handle.read(end - start)
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()  # the range ends with a newline
    return lines
