"""One day of the landing folder judged on every core, without shipping the data around.

The files are cut into byte ranges at line ends. Each worker process reads its own range,
finds the day of each line (the rule of `lines`, as `landing.LandingFolder` reads it), judges the lines of the
requested day and writes the accepted rows to an Arrow IPC file in a scratch folder; only
counts and the (rare) dead-letter rows travel back. This process then reads the IPC files in
range order (memory-mapped), numbers the lines, settles the day of undated lines at the start
of a range from the ranges before it, and hands the chunks to de-duplication, so the result
is the same as reading the folder line by line, whatever the number of workers.
"""

from __future__ import annotations

import os
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from rag_sft.core import fastpath, ingest
from rag_sft.core.ingest import JudgedChunk, SourceLine
from rag_sft.core.parallel import ordered_map
from rag_sft.io.sources.lines import (
    EPOCH,
    UNDATED,
    day_of_file,
    line_days,
    out_of_range,
    out_of_range_rejection,
)
from rag_sft.io.storage.location import location, read_range, version
from rag_sft.io.storage.memory import retain_freed_memory
from rag_sft.io.storage.ranges import DEFAULT_RANGE_BYTES, line_aligned_ranges, mapped_lines

if TYPE_CHECKING:  # for annotations only: the folder's `judged_chunks` calls this module
    from rag_sft.io.sources.landing import LandingFolder

_LOCATION = ["byte_offset", "byte_length"]


@dataclass(frozen=True)
class ByteRange:
    path: str  # a local path or an s3:// URI: the worker opens it itself
    source: str  # the file's path relative to the landing folder
    start: int
    end: int
    last_in_file: bool
    lines_before: int = 0  # lines of the file before `start` (for numbering the first range of a span)


@dataclass
class RangeResult:
    lines: int  # lines in the range, blank ones included (for numbering)
    first_day: date | None  # day of the first / last line with a readable timestamp
    last_day: date | None
    accepted_file: str | None  # Arrow IPC: RAW_EVENTS (line numbers relative) + byte location
    accepted_keys: list[int] = field(default_factory=list)
    dead: list[tuple[int, dict]] = field(default_factory=list)  # of lines of the day
    leading: list[tuple[int, dict]] = field(default_factory=list)  # undated lines before any dated one


class LandingChanged(Exception):
    """Files of the day changed while it was read: nothing of the day is replaced."""


def plan_ranges(folder: LandingFolder, day: date, range_bytes: int = DEFAULT_RANGE_BYTES, workers: int = 1) -> list[ByteRange]:
    """The spans of the files that hold `day` (from the landing index, refreshed first) cut into
    ranges of about `range_bytes`, each ending at a line end: the day reads only its own bytes.
    A file whose bytes no longer match its spans (rewritten with its size and mtime kept) is
    indexed again first."""
    paths = folder.refresh_index(workers)
    stale = folder.index().unverified(day, paths)
    if stale:
        folder.index().invalidate(stale)
        paths = folder.refresh_index(workers)
    order = {source: position for position, source in enumerate(paths)}
    ranges = []
    for source, span in sorted(folder.index().spans_of(day), key=lambda item: order[item[0]]):
        path = folder.readable(paths[source])
        size = version(path).size
        ranges.extend(
            ByteRange(str(path), source, start, end, end >= size, span.lines_before)
            for start, end in line_aligned_ranges(path, range_bytes, span.start, span.end)
        )
    return ranges


def scan_range(
    task: ByteRange, day: date, max_field_chars: int, scratch: str, valid: tuple[date, date] | None = None
) -> RangeResult:
    """Judge the lines of `day` in one range (runs in a worker process)."""
    mapped = mapped_lines(task.path, task.start, task.end)
    raws, numbers = mapped.lines, mapped.numbers  # the positions below index these non-blank lines

    # The day of each line: the fast path has read the usual timestamps, `line_days` reads the rest.
    decoded = fastpath.decode(raws)
    event_positions = np.asarray(decoded.positions, dtype=np.int64)
    days = line_days(raws, (decoded.positions, decoded.micros, decoded.dated))
    beyond = out_of_range(days, valid)  # placed as undated lines are, then rejected for their date
    days[beyond] = UNDATED
    slow_lines: dict[int, SourceLine] = {}
    # An undated line belongs to the day of the nearest dated line before it; those before the
    # first dated line of the range are settled by `judged_chunks`, which sees the earlier ranges.
    dated = days != UNDATED
    nearest_dated = np.maximum.accumulate(np.where(dated, np.arange(len(raws)), -1)) if len(raws) else days
    leading = nearest_dated < 0
    selected = ~leading & (days[np.maximum(nearest_dated, 0)] == (day - EPOCH).days)

    chosen = np.flatnonzero(decoded.dated & selected[event_positions] & ~beyond[event_positions])
    fast = fastpath.accept(decoded, chosen, [task.source] * len(raws), numbers, max_field_chars)
    settled = set(fast.positions)
    rest = [
        (p, _line(slow_lines, task, numbers, raws, p))
        for p in np.flatnonzero(selected & ~beyond).tolist()
        if p not in settled
    ]
    judged = ingest.with_rule_book(fast.batch, fast.positions, rest, max_field_chars)

    accepted_file = None
    if judged.accepted is not None:
        batch = judged.accepted.append_column(
            "byte_offset", pa.array(mapped.offsets[judged.accepted_positions] + task.start)
        )
        batch = batch.append_column("byte_length", pa.array([len(raws[p]) for p in judged.accepted_positions], pa.int64()))
        accepted_file = os.path.join(scratch, f"{uuid.uuid4().hex}.arrow")
        with pa.OSFile(accepted_file, "wb") as sink, pa.ipc.new_file(sink, batch.schema) as writer:
            writer.write_batch(batch)
    keys = [numbers[p] for p in judged.accepted_positions]
    dead = [(numbers[p], ingest.dead_row(slow_lines[p], "rejected", why, request_id)) for p, why, request_id in judged.rejected]
    dead = sorted(dead + _out_of_range_rows(task, numbers, raws, slow_lines, selected & beyond, valid), key=_first)
    leading_lines = [
        (p, _line(slow_lines, task, numbers, raws, p)) for p in np.flatnonzero(leading & ~beyond).tolist()
    ]
    early = ingest.with_rule_book(None, [], leading_lines, max_field_chars)  # undated: always rejected
    leading_dead = [
        (numbers[p], ingest.dead_row(slow_lines[p], "rejected", why, request_id)) for p, why, request_id in early.rejected
    ]
    leading_dead = sorted(
        leading_dead + _out_of_range_rows(task, numbers, raws, slow_lines, leading & beyond, valid), key=_first
    )
    dated_days = days[dated]
    first_day, last_day = (EPOCH + timedelta(days=int(dated_days[i])) for i in (0, -1)) if len(dated_days) else (None, None)
    return RangeResult(mapped.count, first_day, last_day, accepted_file, keys, dead, leading_dead)


def _out_of_range_rows(task, numbers, raws, slow_lines, mask: np.ndarray, valid) -> list[tuple[int, dict]]:
    """Dead-letter rows of the lines whose timestamp lies outside the valid days."""
    rows = []
    for p in np.flatnonzero(mask).tolist():
        line = _line(slow_lines, task, numbers, raws, p)
        rows.append((numbers[p], ingest.dead_row(line, "rejected", out_of_range_rejection(valid), None)))
    return rows


def _first(item: tuple) -> int:
    return item[0]


def _line(slow_lines: dict[int, SourceLine], task: ByteRange, numbers: list[int], raws: list, position: int) -> SourceLine:
    """The line at `position` for the rule book (made once, kept in `slow_lines`)."""
    if position not in slow_lines:
        slow_lines[position] = SourceLine(task.source, numbers[position], bytes(raws[position]))
    return slow_lines[position]


def judged_chunks(
    folder: LandingFolder, day: date, max_field_chars: int, workers: int, scratch: Path, range_bytes: int = DEFAULT_RANGE_BYTES
) -> Iterator[JudgedChunk]:
    """The day's lines of the whole folder as judged chunks in line order, one per range."""
    lines_before: dict[str, int] = {}  # per file: lines before the next range
    day_so_far: dict[str, date] = {}  # the day of the last dated line of the file so far
    waiting: dict[str, list[tuple[int, dict]]] = {}  # undated lines before any dated one
    tasks = plan_ranges(folder, day, range_bytes, workers)
    promised = Counter()  # the day's lines in each file, as indexed
    for source, span in folder.index().spans_of(day):
        promised[source] += span.lines
    read = Counter()
    results = ordered_map(
        scan_range, tasks, workers, day, max_field_chars, str(scratch), folder.valid_days, process_setup=retain_freed_memory
    )
    for task, result in results:
        base = lines_before.get(task.source, task.lines_before)
        lines_before[task.source] = base + result.lines
        dead = [(key + base, _renumbered(row, base)) for key, row in result.dead]
        leading = [(key + base, _renumbered(row, base)) for key, row in result.leading]
        if task.source in day_so_far:  # the nearest dated line before them is in an earlier range
            if day_so_far[task.source] == day:
                dead += leading
        else:  # no dated line before them in the file: the first one after them decides
            waiting.setdefault(task.source, []).extend(leading)
            settled = result.first_day
            if settled is None and task.last_in_file:
                settled = day_of_file(location(task.path))
            if settled is not None:
                settled_lines = waiting.pop(task.source)
                if settled == day:
                    dead = settled_lines + dead
        if result.last_day is not None:
            day_so_far[task.source] = result.last_day
        chunk = _chunk(task, result, base, dead)
        read[task.source] += chunk.read
        yield chunk
    if read != promised:
        differ = sorted(source for source in promised.keys() | read.keys() if read[source] != promised[source])
        folder.index().invalidate(differ)
        raise LandingChanged(
            f"{day}: the landing files changed while the day was read ({', '.join(differ[:10])}: "
            f"{sum(read[s] for s in differ)} lines of the day read where the index held {sum(promised[s] for s in differ)}); "
            "nothing was replaced: run the day again"
        )


def _chunk(task: ByteRange, result: RangeResult, base: int, dead: list[tuple[int, dict]]) -> JudgedChunk:
    read = len(dead) + len(result.accepted_keys)
    if result.accepted_file is None:
        return JudgedChunk(read, None, [], lambda i: b"", dead)
    table = pa.ipc.open_file(pa.memory_map(result.accepted_file)).read_all()
    os.unlink(result.accepted_file)  # the mapping keeps the data readable until it is dropped
    batch = table.combine_chunks().to_batches()[0]
    where = batch.select(_LOCATION)
    batch = batch.drop_columns(_LOCATION)
    batch = batch.set_column(
        batch.schema.get_field_index("source_line"), "source_line", pc.add(batch.column("source_line"), base)
    )
    keys = [key + base for key in result.accepted_keys]

    def raw_of(index: int) -> bytes:
        offset = where.column("byte_offset")[index].as_py()
        return read_range(task.path, offset, offset + where.column("byte_length")[index].as_py())

    return JudgedChunk(read, batch, keys, raw_of, dead)


def _renumbered(row: dict, base: int) -> dict:
    return {**row, "source_line": row["source_line"] + base}
