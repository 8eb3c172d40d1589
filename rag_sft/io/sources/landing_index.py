"""Which files of the landing folder hold which days, kept up to date by path, size and mtime.

Materializing a day must not read the whole history of the folder. The index records, per
file and day, how many lines the day has there and the byte span that holds them, so a day
reads only its spans. It is refreshed by `stat` alone for unchanged files; a file that grew
after a line end is read from where the index stopped, any other change is read again whole.
Only the top-level `timestamp` of each line is decoded (about a tenth of a full decode).

A line's day follows `landing.LandingFolder` (the rule book's placement, tested equal): its own
timestamp, else the nearest dated line before it in the file, else the first one after it, else
the file's name or modification date. Each span carries the file's mtime of the scan that last
changed it, so a day's fingerprint changes exactly when one of its spans does.

Nothing it stores is trusted unseen. Each span keeps a digest of its bytes (the whole span when
small, else its length and first and last 32 KB): a day's read checks the digests of its spans
first and re-indexes a file whose bytes differ (a file rewritten in place with its size and mtime
restored, as `rsync -a` or `cp -p` do), and an append is only taken as one when every earlier
span is unchanged. A file whose lines had dates outside the valid days is read again when the
valid days move over them (an event stamped ahead of time belongs to its own day once that day
may have events).

A day's lines are never lost without a person saying so: the index keeps the most lines each day
has had, and when a file went away or lost lines and its days now have fewer, the day is marked
as having lost lines (with the files) until `accept_loss` clears it; runs refuse such a day.
Renamed lines (a rotated log) still count for their day, so a rotation loses nothing.

The index lives in SQLite (one row per file and per file-day), so a year of hourly files is a
few megabytes; concurrent refreshes (the sensor, a run) write the same rows.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import uuid
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import numpy as np

from rag_sft.core.parallel import ordered_map
from rag_sft.io.sources.lines import EPOCH, UNDATED, day_of_file, line_days, out_of_range, source_name
from rag_sft.io.state.state_db import sqlite_transaction
from rag_sft.io.storage.location import Location, read_range, version
from rag_sft.io.storage.ranges import DEFAULT_RANGE_BYTES, line_aligned_ranges, mapped_lines

_TAIL_BYTES = 4096  # the bytes before the end of a scan that must be unchanged for an append
_DIGEST_EDGE = 32 << 10  # a span's digest covers its first and last this many bytes (all of a small one)
_SCHEMA_VERSION = 2  # an index file of another version is made anew (it is a cache of the folder)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    root TEXT NOT NULL, source TEXT NOT NULL, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL,
    lines INTEGER NOT NULL, last_day TEXT, tail BLOB NOT NULL,
    dated_first TEXT, dated_last TEXT, valid_first TEXT, valid_last TEXT, PRIMARY KEY (root, source));
CREATE TABLE IF NOT EXISTS spans (
    root TEXT NOT NULL, source TEXT NOT NULL, day TEXT NOT NULL, lines INTEGER NOT NULL,
    start INTEGER NOT NULL, end INTEGER NOT NULL, lines_before INTEGER NOT NULL, version INTEGER NOT NULL,
    changed INTEGER NOT NULL, digest BLOB, PRIMARY KEY (root, source, day));
-- The most lines each day has had, and the files that took lines away from it since.
CREATE TABLE IF NOT EXISTS day_marks (
    root TEXT NOT NULL, day TEXT NOT NULL, lines_high INTEGER NOT NULL, lost_from TEXT,
    accepted INTEGER, PRIMARY KEY (root, day));
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
    digest: bytes = b""  # `span_digest` of [start, end) when it was indexed


@dataclass(frozen=True)
class FileEntry:
    source: str  # path under the landing folder (escaped where not UTF-8)
    size: int
    mtime_ns: int
    lines: int  # lines scanned, blank ones too
    last_day: date | None  # day of the file's last dated line (None: no dated line)
    tail: bytes  # sha256 of the last bytes scanned
    days: dict[date, DaySpan]
    dated: tuple[date, date] | None = None  # first and last date of any line, in the valid days or not
    valid: tuple[date, date] | None = None  # the valid days the file was placed with

    def placed_alike(self, valid: tuple[date, date] | None) -> bool:
        """Whether the file's lines fall in the same days under `valid` as when it was scanned:
        true unless a line's date lies where the two ranges of valid days differ."""
        if self.dated is None or valid == self.valid:
            return True
        if valid is None or self.valid is None:
            return False
        return _within(self.dated, valid) == _within(self.dated, self.valid)


def _within(dated: tuple[date, date], valid: tuple[date, date]) -> tuple[date, date] | None:
    """The part of the days `dated` that `valid` lets lines have (None: no day)."""
    first, last = max(dated[0], valid[0]), min(dated[1], valid[1])
    return (first, last) if first <= last else None


@dataclass(frozen=True)
class DayLoss:
    """A day that has fewer lines than it had, because files went away or lost lines."""

    day: date
    lines_before: int  # the most lines the day has had
    lines_now: int
    sources: tuple[str, ...]  # the files that went away or lost lines of the day

    def describe(self) -> str:
        gone = ", ".join(self.sources[:10]) + (f" and {len(self.sources) - 10} more" if len(self.sources) > 10 else "")
        return (
            f"{self.day}: the landing folder now holds {self.lines_now} lines of this day where it held "
            f"{self.lines_before}; files that went away or lost lines: {gone}"
        )


@dataclass(frozen=True)
class _Scan:
    """What a worker found in one range of a file."""

    count: int  # lines, blank ones too
    numbers: np.ndarray  # 1-based line number in the range of each non-blank line
    offsets: np.ndarray  # absolute byte offset of each
    ends: np.ndarray  # absolute byte offset after each
    days: np.ndarray  # day of each (UNDATED where unreadable)
    dated: tuple[int, int] | None  # first and last day number of the dated lines, valid or not


def _scan_range(path: Location, start: int, end: int, valid: tuple[date, date] | None) -> _Scan:
    mapped = mapped_lines(path, start, end)
    numbers = np.asarray(mapped.numbers, dtype=np.int64)
    offsets, ends = mapped.offsets.astype(np.int64) + start, mapped.ends.astype(np.int64) + start
    days = line_days(mapped.lines)
    readable = days[days != UNDATED]
    dated = (int(readable.min()), int(readable.max())) if len(readable) else None
    days[out_of_range(days, valid)] = UNDATED  # placed as undated lines are
    return _Scan(mapped.count, numbers, offsets, ends, days, dated)


def span_digest(path: Location, start: int, end: int) -> bytes:
    """What a day's span must still hold to be read as indexed: its length and its bytes (the
    first and last 32 KB of a larger one: two small reads, whatever the span's size)."""
    digest = hashlib.sha256(f"{end - start}\0".encode())
    if end - start <= 2 * _DIGEST_EDGE:
        digest.update(read_range(path, start, end))
    else:
        digest.update(read_range(path, start, start + _DIGEST_EDGE))
        digest.update(read_range(path, end - _DIGEST_EDGE, end))
    return digest.digest()


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
        with self._transaction():
            if self._db.execute("PRAGMA user_version").fetchone()[0] != _SCHEMA_VERSION:
                # An older index: made anew with a new identity, so watermarks taken from it count as none.
                for (table,) in self._db.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall():
                    self._db.execute(f'DROP TABLE "{table}"')
                self._db.execute(f"PRAGMA user_version = {_SCHEMA_VERSION}")
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    self._db.execute(statement)
            self._db.execute(
                "INSERT INTO identity SELECT ? WHERE NOT EXISTS (SELECT 1 FROM identity)", (uuid.uuid4().hex,)
            )

    def identity(self) -> str:
        """Made when the index file is, so a new index (after its file was deleted) is another one."""
        return self._db.execute("SELECT id FROM identity").fetchone()[0]

    def close(self) -> None:
        self._db.close()

    # --- reading -------------------------------------------------------------------------------
    def entries(self) -> dict[str, FileEntry]:
        spans: dict[str, dict[date, DaySpan]] = {}
        for source, day, lines, start, end, before, span_version, digest in self._db.execute(
            "SELECT source, day, lines, start, end, lines_before, version, digest FROM spans WHERE root = ? AND lines > 0",
            (self.root,),
        ):
            spans.setdefault(source, {})[date.fromisoformat(day)] = DaySpan(
                lines, start, end, before, span_version, digest or b""
            )
        return {
            source: FileEntry(
                source,
                size,
                mtime,
                lines,
                _day(last),
                tail,
                spans.get(source, {}),
                (_day(dated_first), _day(dated_last)) if dated_first else None,
                (_day(valid_first), _day(valid_last)) if valid_first else None,
            )
            for source, size, mtime, lines, last, tail, dated_first, dated_last, valid_first, valid_last in self._db.execute(
                "SELECT source, size, mtime_ns, lines, last_day, tail, dated_first, dated_last, valid_first, valid_last "
                "FROM files WHERE root = ?",
                (self.root,),
            )
        }

    def days_present(self) -> Counter:
        """Lines per day over the whole folder, from the index alone."""
        return Counter(self._day_lines())

    def _day_lines(self, days: Iterable[date] | None = None) -> dict[date, int]:
        """Lines per day: of every day present, or of `days` only (0 for one with none), which
        reads just their spans, so a day's look-up costs the same after a year of history."""
        if days is None:
            rows = self._db.execute(
                "SELECT day, SUM(lines) FROM spans WHERE root = ? GROUP BY day HAVING SUM(lines) > 0", (self.root,)
            )
            return {date.fromisoformat(day): total for day, total in rows}
        wanted = [day.isoformat() for day in days]
        rows = self._db.execute(
            "SELECT day, SUM(lines) FROM spans WHERE root = ? AND day IN (SELECT value FROM json_each(?)) GROUP BY day",
            (self.root, json.dumps(wanted)),
        )
        lines = dict(rows.fetchall())
        return {date.fromisoformat(day): lines.get(day, 0) for day in wanted}

    def spans_of(self, day: date) -> list[tuple[str, DaySpan]]:
        """(source, span) of every file holding `day`, in path order."""
        rows = self._db.execute(
            "SELECT source, lines, start, end, lines_before, version, digest FROM spans "
            "WHERE root = ? AND day = ? AND lines > 0 ORDER BY source",
            (self.root, day.isoformat()),
        )
        return [(source, DaySpan(*values[:5], values[5] or b"")) for source, *values in rows]

    def fingerprint(self, day: date) -> str:
        """Changes exactly when a span of the day changes (new lines, a rewritten file), or a loss
        of its lines is accepted."""
        digest = hashlib.sha256()
        for source, span in self.spans_of(day):
            digest.update(f"{source}\0{span.lines}\0{span.start}\0{span.end}\0{span.version}\n".encode())
        row = self._db.execute(
            "SELECT accepted FROM day_marks WHERE root = ? AND day = ?", (self.root, day.isoformat())
        ).fetchone()
        if row and row[0] is not None:
            digest.update(f"loss accepted at change {row[0]}\n".encode())
        return digest.hexdigest()

    def change_counter(self) -> int:
        row = self._db.execute("SELECT counter FROM changes WHERE root = ?", (self.root,)).fetchone()
        return row[0] if row else 0

    def days_changed_after(self, counter: int) -> set[date]:
        """Days whose spans changed (or went away) after the change counter was `counter`."""
        rows = self._db.execute("SELECT DISTINCT day FROM spans WHERE root = ? AND changed > ?", (self.root, counter))
        return {date.fromisoformat(day) for (day,) in rows}

    # --- losses --------------------------------------------------------------------------------
    def loss(self, day: date) -> DayLoss | None:
        """The day's loss of lines that no one has accepted yet, if any."""
        row = self._db.execute(
            "SELECT lines_high, lost_from FROM day_marks WHERE root = ? AND day = ? AND lost_from IS NOT NULL",
            (self.root, day.isoformat()),
        ).fetchone()
        if row is None:
            return None
        now = self._day_lines([day])[day]
        return DayLoss(day, row[0], now, tuple(json.loads(row[1]))) if now < row[0] else None

    def losses(self) -> list[DayLoss]:
        rows = self._db.execute(
            "SELECT day FROM day_marks WHERE root = ? AND lost_from IS NOT NULL ORDER BY day", (self.root,)
        )
        return [loss for (day,) in rows.fetchall() if (loss := self.loss(date.fromisoformat(day)))]

    def accept_loss(self, day: date) -> DayLoss | None:
        """A person's word that the day's lost lines are gone for good: the day's lines now are
        its lines from here on, and its fingerprint changes so automation runs it again."""
        lost = self.loss(day)
        with self._transaction():
            change = self._next_change()
            now = self._day_lines([day])[day]
            self._db.execute(
                "INSERT INTO day_marks (root, day, lines_high, lost_from, accepted) VALUES (?, ?, ?, NULL, ?) "
                "ON CONFLICT (root, day) DO UPDATE SET lines_high = excluded.lines_high, lost_from = NULL, "
                "accepted = excluded.accepted",
                (self.root, day.isoformat(), now, change),
            )
            self._db.execute(
                "UPDATE spans SET changed = ? WHERE root = ? AND day = ?", (change, self.root, day.isoformat())
            )
        return lost

    def _mark_days(self, days: set[date], shrunk: dict[date, set[str]]) -> None:
        """Keep each day's most lines; a day below it because files went away or lost lines
        (`shrunk`: per day, those files) is marked as losing lines from them. A day below it for
        other reasons (a line's date edited, an event whose day became valid) just has fewer."""
        now = self._day_lines(days)
        marks = {
            date.fromisoformat(day): (high, set(json.loads(lost)) if lost else set())
            for day, high, lost in self._db.execute(
                "SELECT day, lines_high, lost_from FROM day_marks WHERE root = ? AND day IN (SELECT value FROM json_each(?))",
                (self.root, json.dumps([day.isoformat() for day in days])),
            )
        }
        for day in sorted(days):
            high, lost = marks.get(day, (0, set()))
            if now[day] >= high:
                high, lost = now[day], set()
            elif day in shrunk:
                lost |= shrunk[day]
            elif not lost:
                high = now[day]
            self._db.execute(
                "INSERT INTO day_marks (root, day, lines_high, lost_from) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (root, day) DO UPDATE SET lines_high = excluded.lines_high, lost_from = excluded.lost_from",
                (self.root, day.isoformat(), high, json.dumps(sorted(lost)) if lost else None),
            )

    # --- verifying -----------------------------------------------------------------------------
    def unverified(self, day: date, paths: dict[str, Location]) -> set[str]:
        """The files whose bytes no longer match the day's spans (to be indexed again)."""
        stale = set()
        for source, span in self.spans_of(day):
            path = paths.get(source)
            if path is None:
                stale.add(source)
                continue
            readable = self.folder.readable(path)
            if version(readable).size < span.end or span_digest(readable, span.start, span.end) != span.digest:
                stale.add(source)
        return stale

    def invalidate(self, sources: Iterable[str]) -> None:
        """Make the next refresh read these files again whole, whatever their size and mtime."""
        with self._transaction():
            for source in sources:
                self._db.execute("UPDATE files SET size = -1 WHERE root = ? AND source = ?", (self.root, source))

    # --- refreshing ----------------------------------------------------------------------------
    def refresh(self, workers: int = 1, range_bytes: int = DEFAULT_RANGE_BYTES, listing: dict | None = None) -> set[date]:
        """Bring the index up to date with the folder; returns the days whose spans changed.
        `listing`: the folder's listing when the caller has just made it."""
        known = self.entries()
        valid = self.folder.valid_days
        # (path to read, source, its size, the file's size and mtime, the entry, the entry resumed)
        todo: list[tuple[Location, str, int, int, int, FileEntry | None, FileEntry | None]] = []
        listing = self.folder.listing() if listing is None else listing
        for path, status in listing.items():  # an object store's listing: no request per file
            source = source_name(path, self.folder.root)
            entry = known.pop(source, None)
            if (
                entry is not None
                and (entry.size, entry.mtime_ns) == (status.size, status.mtime_ns)
                and entry.placed_alike(valid)
            ):
                continue
            readable = self.folder.readable(path, status)  # compressed files: their decompressed copy
            appended = entry is not None and readable == path and entry.placed_alike(valid) and _appended(path, entry, status.size)
            resume = entry if appended else None
            size = status.size if readable == path else version(readable).size
            todo.append((readable, source, size, status.size, status.mtime_ns, entry, resume))
        tasks = [
            (path, start, end)
            for path, _, size, _, _, _, resume in todo
            for start, end in line_aligned_ranges(path, range_bytes, resume.size if resume else 0, size)
        ]
        scans: dict[str, list[_Scan]] = {}
        for (path, _, _), scan in ordered_map(_scan_range_task, tasks, workers, valid):
            scans.setdefault(str(path), []).append(scan)
        changed: set[date] = set()
        shrunk: dict[date, set[str]] = {}  # days that files which went away or lost lines held
        entries = []
        for path, source, size, file_size, mtime_ns, old, resume in todo:
            entry = _folded(path, source, size, file_size, mtime_ns, resume, scans.get(str(path), []), valid)
            entries.append((entry, old))
            changed |= {day for day, span in entry.days.items() if old is None or old.days.get(day) != span}
            if old is not None:
                changed |= set(old.days) - set(entry.days)
                if sum(span.lines for span in entry.days.values()) < sum(span.lines for span in old.days.values()):
                    for day, span in old.days.items():
                        if entry.days.get(day) is None or entry.days[day].lines < span.lines:
                            shrunk.setdefault(day, set()).add(source)
        for source, entry in known.items():  # files that are gone
            changed |= set(entry.days)
            for day in entry.days:
                shrunk.setdefault(day, set()).add(source)
        if entries or known:
            with self._transaction():  # one commit for the whole refresh (20,000 small files: one fsync)
                change = self._next_change()
                for entry, old in entries:
                    self._store(entry, old, change)
                for source, entry in known.items():
                    self._forget(source, entry, change)
                self._mark_days(changed, shrunk)
        return changed

    def _next_change(self) -> int:
        self._db.execute(
            "INSERT INTO changes (root, counter) VALUES (?, 1) ON CONFLICT (root) DO UPDATE SET counter = counter + 1",
            (self.root,),
        )
        return self.change_counter()

    def _store(self, entry: FileEntry, old: FileEntry | None, change: int) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                self.root,
                entry.source,
                entry.size,
                entry.mtime_ns,
                entry.lines,
                _text(entry.last_day),
                entry.tail,
                *(_text(day) for day in entry.dated or (None, None)),
                *(_text(day) for day in entry.valid or (None, None)),
            ),
        )
        for day, span in entry.days.items():
            if old is not None and old.days.get(day) == span:
                continue
            self._db.execute(
                "INSERT OR REPLACE INTO spans VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (self.root, entry.source, day.isoformat(), span.lines, span.start, span.end, span.lines_before,
                 span.version, change, span.digest),
            )
        gone = set(old.days) - set(entry.days) if old is not None else set()
        self._mark_gone(entry.source, gone, change)

    def _forget(self, source: str, entry: FileEntry, change: int) -> None:
        self._db.execute("DELETE FROM files WHERE root = ? AND source = ?", (self.root, source))
        self._mark_gone(source, set(entry.days), change)

    def _mark_gone(self, source: str, days: Iterable[date], change: int) -> None:
        """A day that left a file keeps an empty span, so `days_changed_after` still sees it."""
        for day in days:
            self._db.execute(
                "INSERT OR REPLACE INTO spans VALUES (?, ?, ?, 0, 0, 0, 0, 0, ?, NULL)",
                (self.root, source, day.isoformat(), change),
            )

    def _transaction(self):
        return sqlite_transaction(self._db, "BEGIN IMMEDIATE")


def _day(text: str | None) -> date | None:
    return date.fromisoformat(text) if text else None


def _text(day: date | None) -> str | None:
    return day.isoformat() if day else None


def _scan_range_task(task: tuple[Location, int, int], valid: tuple[date, date] | None) -> _Scan:
    path, start, end = task
    return _scan_range(path, start, end, valid)


def _tail_digest(path: Location, size: int) -> bytes:
    return hashlib.sha256(read_range(path, max(0, size - _TAIL_BYTES), size)).digest()


def _appended(path: Location, entry: FileEntry, size: int) -> bool:
    """The file only grew after a line end since it was indexed (a log being appended to)."""
    if entry.size <= 0 or size <= entry.size or entry.last_day is None:  # size -1: see `invalidate`
        return False
    if read_range(path, entry.size - 1, entry.size) != b"\n":
        return False
    if _tail_digest(path, entry.size) != entry.tail:
        return False
    return all(span_digest(path, span.start, span.end) == span.digest for span in entry.days.values())


def _folded(
    path: Location,
    source: str,
    size: int,
    file_size: int,
    mtime_ns: int,
    resume: FileEntry | None,
    scans: list[_Scan],
    valid: tuple[date, date] | None,
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
        old = spans.get(day)
        start = int(offsets_all[mine].min()) if old is None else old.start
        end = int(ends_all[mine].max())
        spans[day] = DaySpan(
            int(mine.sum()) + (old.lines if old else 0),
            start,
            end,
            int(numbers_all[mine].min()) - 1 if old is None else old.lines_before,
            mtime_ns,
            span_digest(path, start, end),
        )
    last_dated = days_all[dated][-1] if dated.any() else None
    last_day = EPOCH + timedelta(days=int(last_dated)) if last_dated is not None else (resume.last_day if resume else None)
    ranges = [scan.dated for scan in scans if scan.dated is not None]
    if resume and resume.dated:
        ranges.append(tuple((day - EPOCH).days for day in resume.dated))
    dated_range = (
        (EPOCH + timedelta(days=min(r[0] for r in ranges)), EPOCH + timedelta(days=max(r[1] for r in ranges)))
        if ranges
        else None
    )
    return FileEntry(source, file_size, mtime_ns, lines_before, last_day, _tail_digest(path, size), spans, dated_range, valid)
