"""The export-format check over a whole JSONL file, read back in line-aligned ranges on every core."""

from __future__ import annotations

from pathlib import Path

from rag_sft.core import checks
from rag_sft.core.parallel import ordered_map
from rag_sft.io.storage.ranges import DEFAULT_RANGE_BYTES, line_aligned_ranges, mapped_raw_lines


def check_jsonl_file(path: Path, day: str, workers: int, range_bytes: int = DEFAULT_RANGE_BYTES) -> checks.FormatReport:
    """`checks.check_jsonl_lines` over the file as written, with file-wide line numbers."""
    report = checks.FormatReport()
    for _, part in ordered_map(_check_range, line_aligned_ranges(path, range_bytes), workers, str(path), day):
        report.merge(part, line_offset=report.lines)
    return report


def _check_range(span: tuple[int, int], path: str, day: str) -> checks.FormatReport:
    return checks.check_jsonl_lines(mapped_raw_lines(path, *span), day)
