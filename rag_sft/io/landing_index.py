"""Which files of the landing folder hold which days, kept up to date by path, size and mtime.

Materializing a day must not read the whole history of the folder. The index records, per
file and day, how many lines the day has there and the byte span that holds them, so a day
reads only its spans. It is refreshed by `stat` alone for unchanged files; a file that grew
after a line end is read from where the index stopped, any other change is read again whole.
Only the top-level `timestamp` of each line is decoded (about a tenth of a full decode).

A line's day follows `sources.LandingFolder` (the rule book's placement, tested equal): its own
timestamp, else the nearest dated line before it in the file, else the first one after it, else
the file's name or modification date. Each span carries the file's mtime of the scan that last
changed it, so a day's fingerprint changes exactly when one of its spans does.

The index lives in SQLite (one row per file and per file-day), so a year of hourly files is a
few megabytes; concurrent refreshes (the sensor, a run) write the same rows.
"""

from __future__ import annotations

import hashlib
import sqlite3
import uuid
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import numpy as np

from rag_sft.core.parallel import ordered_map
from rag_sft.io.ranges import DEFAULT_RANGE_BYTES, line_aligned_ranges, mapped_lines
from rag_sft.io.sources import EPOCH, UNDATED, day_of_file, line_days, out_of_range, source_name
from rag_sft.io.state_db import sqlite_transaction
from rag_sft.io.storage import Location, read_range, version

_TAIL_BYTES = 4096  # the bytes before the end of a scan that must be unchanged for an append

_SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    root TEXT NOT NULL, source TEXT NOT NULL, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL,
    lines INTEGER NOT NULL, last_day TEXT, tail BLOB NOT NULL, PRIMARY KEY (root, source));
CREATE TABLE IF NOT EXISTS spans (
    root TEXT NOT NULL, source TEXT NOT NULL, day TEXT NOT NULL, lines INTEGER NOT NULL,
    start INTEGER NOT NULL, end INTEGER NOT NULL, lines_before INTEGER NOT NULL, version INTEGER NOT NULL,
    changed INTEGER NOT NULL, PRIMARY KEY (root, source, day));
CREATE INDEX IF NOT EXISTS spans_by_day ON spans (root, day);
CREATE INDEX IF NOT EXISTS spans_by_change ON spans (root, changed);
CREATE TABLE IF NOT EXISTS changes (root TEXT PRIMARY KEY, counter INTEGER NOT NULL);
-- Which index this is: a change counter numbers the changes of one index file only.
CREATE TABLE IF NOT EXISTS identity (id TEXT NOT NULL);
"""


@dataclass(frozen=True)
class DaySpan:
    """The lines of one day in one file."""

    lines: int  # non-blank lines of the day
    start: int  # byte offset of the first of them
    end: int  # byte offset just after the last of them
    lines_before: int  # lines (blank ones too) before `start`, for numbering
    version: int  # mtime_ns of the scan that last changed the span


@dataclass(frozen=True)
class FileEntry:
    source: str  # path under the landing folder (escaped where not UTF-8)
    size: int
    mtime_ns: int
    lines: int  # lines scanned, blank ones too
    last_day: date | None  # day of the file's last dated line (None: no dated line)
    tail: bytes  # sha256 of the last bytes scanned
    days: dict[date, DaySpan]


@dataclass(frozen=True)
class _Scan:
    """What a worker found in one range of a file."""

    count: int  # lines, blank ones too
    numbers: np.ndarray  # 1-based line number in the range of each non-blank line
    offsets: np.ndarray  # absolute byte offset of each
    ends: np.ndarray  # absolute byte offset after each
    days: np.ndarray  # day of each (UNDATED where unreadable)


def _scan_range(path: Location, start: int, end: int, valid: tuple[date, date] | None) -> _Scan:
    mapped = mapped_lines(path, start, end)
    numbers = np.asarray(mapped.numbers, dtype=np.int64)
    offsets, ends = mapped.offsets.astype(np.int64) + start, mapped.ends.astype(np.int64) + start
    days = line_days(mapped.lines)
    days[out_of_range(days, valid)] = UNDATED  # placed as undated lines are
    return _Scan(mapped.count, numbers, offsets, ends, days)


class LandingIndex:
    """The index of one landing folder, stored in `db_path` (in memory when None)."""

    def __init__(self, folder, db_path: Path | None = None):
        self.folder = folder
        self.root = str(folder.root.absolute())
        if db_path is not None:
            db_path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(db_path) if db_path else ":memory:", timeout=120, isolation_level=None)
        if db_path is not None:
            self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(_SCHEMA)
        self._db.execute("INSERT INTO identity SELECT ? WHERE NOT EXISTS (SELECT 1 FROM identity)", (uuid.uuid4().hex,))

    def identity(self) -> str:
        """Made when the index file is, so a new index (after its file was deleted) is another one."""
        return self._db.execute("SELECT id FROM identity").fetchone()[0]

    def close(self) -> None:
        self._db.close()

    # --- reading -------------------------------------------------------------------------------
    def entries(self) -> dict[str, FileEntry]:
        spans: dict[str, dict[date, DaySpan]] = {}
        for source, day, lines, start, end, before, span_version in self._db.execute(
            "SELECT source, day, lines, start, end, lines_before, version FROM spans WHERE root = ? AND lines > 0",
            (self.root,),
        ):
            spans.setdefault(source, {})[date.fromisoformat(day)] = DaySpan(lines, start, end, before, span_version)
        return {
            source: FileEntry(
                source, size, mtime, lines, date.fromisoformat(last) if last else None, tail, spans.get(source, {})
            )
            for source, size, mtime, lines, last, tail in self._db.execute(
                "SELECT source, size, mtime_ns, lines, last_day, tail FROM files WHERE root = ?", (self.root,)
            )
        }

    def days_present(self) -> Counter:
        """Lines per day over the whole folder, from the index alone."""
        return Counter(
            {
                date.fromisoformat(day): lines
                for day, lines in self._db.execute(
                    "SELECT day, SUM(lines) FROM spans WHERE root = ? GROUP BY day HAVING SUM(lines) > 0", (self.root,)
                )
            }
        )

    def spans_of(self, day: date) -> list[tuple[str, DaySpan]]:
        """(source, span) of every file holding `day`, in path order."""
        rows = self._db.execute(
            "SELECT source, lines, start, end, lines_before, version FROM spans "
            "WHERE root = ? AND day = ? AND lines > 0 ORDER BY source",
            (self.root, day.isoformat()),
        )
        return [(source, DaySpan(*values)) for source, *values in rows]

    def fingerprint(self, day: date) -> str:
        """Changes exactly when a span of the day changes (new lines, a rewritten file)."""
        digest = hashlib.sha256()
        for source, span in self.spans_of(day):
            digest.update(f"{source}\0{span.lines}\0{span.start}\0{span.end}\0{span.version}\n".encode())
        return digest.hexdigest()

    def change_counter(self) -> int:
        row = self._db.execute("SELECT counter FROM changes WHERE root = ?", (self.root,)).fetchone()
        return row[0] if row else 0

    def days_changed_after(self, counter: int) -> set[date]:
        """Days whose spans changed (or went away) after the change counter was `counter`."""
        rows = self._db.execute("SELECT DISTINCT day FROM spans WHERE root = ? AND changed > ?", (self.root, counter))
        return {date.fromisoformat(day) for (day,) in rows}

    # --- refreshing ----------------------------------------------------------------------------
    def refresh(self, workers: int = 1, range_bytes: int = DEFAULT_RANGE_BYTES) -> set[date]:
        """Bring the index up to date with the folder; returns the days whose spans changed."""
        known = self.entries()
        # (path to read, source, its size, the file's size and mtime, the entry, the entry resumed)
        todo: list[tuple[Location, str, int, int, int, FileEntry | None, FileEntry | None]] = []
        for path, status in self.folder.listing().items():  # an object store's listing: no request per file
            source = source_name(path, self.folder.root)
            entry = known.pop(source, None)
            if entry is not None and (entry.size, entry.mtime_ns) == (status.size, status.mtime_ns):
                continue
            readable = self.folder.readable(path, status)  # compressed files: their decompressed copy
            resume = entry if entry is not None and readable == path and _appended(path, entry, status.size) else None
            size = status.size if readable == path else version(readable).size
            todo.append((readable, source, size, status.size, status.mtime_ns, entry, resume))
        tasks = [
            (path, start, end)
            for path, _, size, _, _, _, resume in todo
            for start, end in line_aligned_ranges(path, range_bytes, resume.size if resume else 0, size)
        ]
        scans: dict[str, list[_Scan]] = {}
        for (path, _, _), scan in ordered_map(_scan_range_task, tasks, workers, self.folder.valid_days):
            scans.setdefault(str(path), []).append(scan)
        changed: set[date] = set()
        for path, source, size, file_size, mtime_ns, old, resume in todo:
            entry = _folded(path, source, size, file_size, mtime_ns, resume, scans.get(str(path), []))
            changed |= {day for day, span in entry.days.items() if old is None or old.days.get(day) != span}
            if old is not None:
                changed |= set(old.days) - set(entry.days)
            self._store(entry, old)
        for source, entry in known.items():  # files that are gone
            changed |= set(entry.days)
            self._forget(source, entry)
        return changed

    def _next_change(self) -> int:
        self._db.execute(
            "INSERT INTO changes (root, counter) VALUES (?, 1) ON CONFLICT (root) DO UPDATE SET counter = counter + 1",
            (self.root,),
        )
        return self.change_counter()

    def _store(self, entry: FileEntry, old: FileEntry | None) -> None:
        with self._transaction():
            change = self._next_change()
            self._db.execute(
                "INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    self.root,
                    entry.source,
                    entry.size,
                    entry.mtime_ns,
                    entry.lines,
                    entry.last_day.isoformat() if entry.last_day else None,
                    entry.tail,
                ),
            )
            for day, span in entry.days.items():
                if old is not None and old.days.get(day) == span:
                    continue
                self._db.execute(
                    "INSERT OR REPLACE INTO spans VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (self.root, entry.source, day.isoformat(), span.lines, span.start, span.end, span.lines_before,
                     span.version, change),
                )
            gone = set(old.days) - set(entry.days) if old is not None else set()
            self._mark_gone(entry.source, gone, change)

    def _forget(self, source: str, entry: FileEntry) -> None:
        with self._transaction():
            change = self._next_change()
            self._db.execute("DELETE FROM files WHERE root = ? AND source = ?", (self.root, source))
            self._mark_gone(source, set(entry.days), change)

    def _mark_gone(self, source: str, days: Iterable[date], change: int) -> None:
        """A day that left a file keeps an empty span, so `days_changed_after` still sees it."""
        for day in days:
            self._db.execute(
                "INSERT OR REPLACE INTO spans VALUES (?, ?, ?, 0, 0, 0, 0, 0, ?)",
                (self.root, source, day.isoformat(), change),
            )

    def _transaction(self):
        return sqlite_transaction(self._db, "BEGIN IMMEDIATE")


def _scan_range_task(task: tuple[Location, int, int], valid: tuple[date, date] | None) -> _Scan:
    path, start, end = task
    return _scan_range(path, start, end, valid)


def _tail_digest(path: Location, size: int) -> bytes:
    return hashlib.sha256(read_range(path, max(0, size - _TAIL_BYTES), size)).digest()


def _appended(path: Location, entry: FileEntry, size: int) -> bool:
    """The file only grew after a line end since it was indexed (a log being appended to)."""
    if size <= entry.size or entry.last_day is None:
        return False
    if read_range(path, entry.size - 1, entry.size) != b"\n":
        return False
    return _tail_digest(path, entry.size) == entry.tail


def _folded(
    path: Location, source: str, size: int, file_size: int, mtime_ns: int, resume: FileEntry | None, scans: list[_Scan]
) -> FileEntry:
    """The file's entry from its range scans (in order), continuing `resume` when appended.
    `path` and `size`: what was read (a compressed file's copy); `file_size`: the file's own."""
    lines_before = resume.lines if resume else 0
    numbers, offsets, ends, days = [], [], [], []
    for scan in scans:
        numbers.append(scan.numbers + lines_before)
        offsets.append(scan.offsets)
        ends.append(scan.ends)
        days.append(scan.days)
        lines_before += scan.count
    numbers_all, offsets_all, ends_all, days_all = (
        np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64) for parts in (numbers, offsets, ends, days)
    )
    # An undated line takes the day of the nearest dated line before it (the carried one when
    # appended); those before the file's first dated line take that line's day, or the file's.
    dated = days_all != UNDATED
    nearest = np.maximum.accumulate(np.where(dated, np.arange(len(days_all)), -1)) if len(days_all) else days_all
    carried = (resume.last_day - EPOCH).days if resume and resume.last_day else UNDATED
    assigned = np.where(nearest >= 0, days_all[np.maximum(nearest, 0)], carried)
    if np.any(assigned == UNDATED):
        first = days_all[dated][0] if dated.any() else (day_of_file(path) - EPOCH).days
        assigned = np.where(assigned == UNDATED, first, assigned)
    spans = dict(resume.days) if resume else {}
    for day_number in np.unique(assigned).tolist():
        mine = assigned == day_number
        day = EPOCH + timedelta(days=day_number)
        new = DaySpan(
            int(mine.sum()),
            int(offsets_all[mine].min()),
            int(ends_all[mine].max()),
            int(numbers_all[mine].min()) - 1,
            mtime_ns,
        )
        old = spans.get(day)
        spans[day] = new if old is None else DaySpan(old.lines + new.lines, old.start, new.end, old.lines_before, mtime_ns)
    last_dated = days_all[dated][-1] if dated.any() else None
    last_day = EPOCH + timedelta(days=int(last_dated)) if last_dated is not None else (resume.last_day if resume else None)
    return FileEntry(source, file_size, mtime_ns, lines_before, last_day, _tail_digest(path, size), spans)
