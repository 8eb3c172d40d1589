"""Event sources: a landing folder of JSON Lines files, or a SQL table.

Both yield `SourceLine`s for one UTC day in a stable order (file path then line number, or
row id), so "keep the first duplicate" and byte-identical re-runs hold.

Which day a line belongs to: the UTC date of its `timestamp`. A line whose timestamp cannot
be read (broken JSON, a missing or garbled timestamp) belongs to the day of the nearest
readable line before it in the same file or table (after it, when none is before; for a file
with no readable line at all, the date in the file's name, else the file's modification
date). Every line thus lands in exactly one day, whichever day is materialized first.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import re
import shutil
import tempfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import orjson

from rag_sft.core import fastpath
from rag_sft.core.events import INVALID_JSON, MISSING_ID, TIMESTAMP_OUT_OF_RANGE, Rejection, timestamp_date
from rag_sft.core.ingest import UNDECODABLE, JudgedChunk, SourceLine, batched, decode_json, judge_lines
from rag_sft.io.storage import FileVersion, Location, StorageUnavailable, listed_files, location, open_binary, version


class SourceUnavailable(Exception):
    """The configured source cannot be read at all (missing folder, unreachable database)."""


# --- landing folder ---------------------------------------------------------------------------
_TIMESTAMP_KEY = b'"timestamp"'
_TIMESTAMP_VALUE = re.compile(rb'"timestamp"\s*:\s*"([0-9][0-9T:.+\-Z ]{7,40})"')
_DATE_IN_NAME = re.compile(r"(\d{4})-(\d{2})-(\d{2})")
_READ_BUFFER = 1 << 20


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


class LandingFolder:
    """Every JSON Lines file under `root` (a local folder or an `s3://bucket/prefix`), recursively,
    in path order: the names `pattern` matches (searched in the name).

    `index_path`: where the landing index (which files hold which days) is kept between runs;
    None keeps it in memory, so every use reads the folder once.
    """

    def __init__(
        self,
        root: str | Location,
        index_path: Path | None = None,
        valid_days: tuple[date, date] | None = None,
        pattern: str = DEFAULT_LANDING_PATTERN,
    ):
        """`valid_days`: the first and last day an event may have (see `out_of_range`); None: any."""
        self.root = location(root)
        self.index_path = index_path
        self.valid_days = valid_days
        self.pattern = re.compile(pattern)
        self._index = None
        self._ignored: list[str] | None = None  # set by each listing
        self._scratch: tempfile.TemporaryDirectory | None = None

    def index(self):
        if self._index is None:
            from rag_sft.io.landing_index import LandingIndex  # it builds on this module

            self._index = LandingIndex(self, self.index_path)
        return self._index

    def refresh_index(self, workers: int = 1) -> dict[str, Location]:
        """Bring the index up to date; returns each file's source name and path, in path order."""
        listing = self.listing()
        self.index().refresh(workers, listing=listing)
        self.forget_old_copies(listing)
        return {source_name(path, self.root): path for path in listing}

    def files(self) -> list[Location]:
        return list(self.listing())

    def listing(self) -> dict[Location, FileVersion]:
        """Landing files in path order with their versions (see `pattern`; compressed as `.gz` or
        `.zst` as logs are shipped); hidden names (a shipper's file being written) are not
        landing files (see `storage.listed_files`: one listing in an object store)."""
        try:
            everything = listed_files(self.root, lambda name: True)
        except FileNotFoundError:
            raise SourceUnavailable(
                f"landing folder {self.root} does not exist or is not a folder; "
                "point RAG_SFT_LANDING_DIR at the folder that holds your *.jsonl quality events"
            ) from None
        landing = {path: status for path, status in everything.items() if self.pattern.search(path.name)}
        self._ignored = [source_name(path, self.root) for path in everything if path not in landing]
        return landing

    def ignored_files(self) -> list[str]:
        """The other files of the folder (hidden ones aside), as the latest listing found them:
        named so that a person sees that `events.json` or `events.csv` was not read, and can
        rename it or widen the pattern."""
        if self._ignored is None:
            self.listing()
        return self._ignored

    def readable(self, path: Location, status: FileVersion | None = None) -> Location:
        """The file as plain JSON Lines: itself, or for a compressed file its decompressed copy
        (made once per version of the file, under the index's local folder, an object's too;
        same name less the compression suffix and same modification time, so the file-date
        fallback is unchanged). `status`: the file's version when a listing gave it already."""
        suffix = path.suffix.lower()
        if suffix not in _DECOMPRESSORS:
            return path
        status = status or version(path)
        key = hashlib.sha256(f"{path}\0{status.size}\0{status.mtime_ns}".encode()).hexdigest()[:16]
        target = self._decompressed_dir() / key / path.name.removesuffix(suffix)
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            staged = target.with_name(f".{target.name}.tmp-{os.getpid()}")
            _decompress(path, staged, _DECOMPRESSORS[suffix])
            os.utime(staged, ns=(status.mtime_ns, status.mtime_ns))
            os.replace(staged, target)
        return target

    def _decompressed_dir(self) -> Path:
        if self.index_path is not None:
            return self.index_path.parent / "decompressed"
        if self._scratch is None:
            self._scratch = tempfile.TemporaryDirectory(prefix="rag_sft_decompressed_")
        return Path(self._scratch.name)

    def forget_old_copies(self, listing: dict[Location, FileVersion]) -> None:
        """Remove decompressed copies of compressed files that changed or went away."""
        folder = self._decompressed_dir()
        if not folder.is_dir():
            return
        compressed = {path: status for path, status in listing.items() if path.suffix.lower() in _DECOMPRESSORS}
        current = {self.readable(path, status).parent for path, status in compressed.items()}
        for entry in folder.iterdir():
            if entry not in current:
                shutil.rmtree(entry, ignore_errors=True)

    def has_events(self) -> bool:
        try:
            return any(found.size > 0 for found in self.listing().values())
        except SourceUnavailable:
            return False

    def changes_after(self, after: str | None) -> tuple[set[date], str]:
        """The days whose lines changed since the watermark `after` (all days when None), and the
        watermark now: `<index identity>@<its change counter>`. A counter numbers the changes of
        one index only, so a watermark of another index (another landing folder or first
        partition day, which `make ui` moves when older files land, or a deleted index file)
        counts as none: every day is compared with its latest run again, and only days whose
        content differs run."""
        self.refresh_index()
        index, identity = self.index(), self.index().identity()
        origin, _, counter = after.rpartition("@") if isinstance(after, str) else ("", "", "")
        since = int(counter) if origin == identity else 0
        return index.days_changed_after(since), f"{identity}@{index.change_counter()}"

    def fingerprint(self, day: date) -> str:
        """Changes whenever the day's lines do (the index must be fresh: see `changes_after`)."""
        return self.index().fingerprint(day)

    def loss(self, day: date):
        """The day's lines lost with files that went away or shrank, not yet accepted (or None)."""
        self.refresh_index()
        return self.index().loss(day)

    def accept_loss(self, day: date):
        self.refresh_index()
        return self.index().accept_loss(day)

    def lines_for_day(self, day: date) -> Iterator[SourceLine]:
        for path in self.files():
            for line_day, line in self._dated_lines(path):
                if line_day == day:
                    yield line

    def judged_chunks(
        self, day: date, max_field_chars: int, batch_size: int, workers: int, scratch: Path
    ) -> Iterator[JudgedChunk]:
        """The day's lines judged on `workers` processes (see `landing_scan`)."""
        from rag_sft.io import landing_scan  # it builds on this module

        return landing_scan.judged_chunks(self, day, max_field_chars, workers, scratch)

    def days_present(self) -> Counter:
        """Lines per day over the whole folder (blank lines excluded), from the index: only files
        that changed since it was last refreshed are read."""
        self.refresh_index()
        return self.index().days_present()

    def _dated_lines(self, path: Location) -> Iterator[tuple[date, SourceLine]]:
        source = source_name(path, self.root)
        waiting: list[SourceLine] = []  # lines with no readable date before the first dated one
        last_day: date | None = None
        for number, raw in _numbered_lines(self.readable(path)):
            line = SourceLine(source, number, raw)
            line_day = line_date(line)
            if line_day is None:
                if last_day is None:
                    waiting.append(line)
                else:
                    yield last_day, line
                continue
            for earlier in waiting:
                yield line_day, earlier
            waiting = []
            last_day = line_day
            yield line_day, line
        if waiting:
            fallback = day_of_file(path)
            for line in waiting:
                yield fallback, line


def _open_zstd(compressed):
    import zstandard

    return zstandard.open(compressed, "rb")


_DECOMPRESSORS = {".gz": gzip.open, ".zst": _open_zstd}


def _decompress(path: Location, target: Path, opener) -> None:
    """Decompress `path` into `target`. A damaged stream keeps what could be read and ends with
    one line saying what went wrong, which the rule book rejects (invalid_json) on the day of
    its neighbours: the day goes on and the dead letter says why."""
    with target.open("wb") as out:
        try:
            with open_binary(path) as compressed, opener(compressed) as stream:
                # read1: what each step decompressed is written before a damaged part stops it
                while chunk := stream.read1(1 << 16):
                    out.write(chunk)
        except StorageUnavailable:
            raise  # the store failed, not the stream
        except (OSError, EOFError, ValueError) as error:
            import zstandard

            if isinstance(error, ValueError) and not isinstance(error, zstandard.ZstdError):
                raise
            out.write(f"\n(the rest of {path.name} could not be decompressed: {error})\n".encode())


def _numbered_lines(path: Location) -> Iterator[tuple[int, bytes]]:
    """Non-blank lines with their 1-based numbers (the buffered file iterator is the fastest
    way to split lines in CPython)."""
    with open_binary(path, _READ_BUFFER) as handle:
        for number, raw in enumerate(handle, 1):
            raw = raw.rstrip(b"\r\n")
            if raw.strip():
                yield number, raw


def day_of_file(path: Location) -> date:
    match = _DATE_IN_NAME.search(path.name)
    if match:
        try:
            return date(int(match[1]), int(match[2]), int(match[3]))
        except ValueError:
            pass
    return datetime.fromtimestamp(version(path).mtime_ns / 1e9, tz=UTC).date()


# --- SQL table --------------------------------------------------------------------------------
_COLUMNS = "id, request_id, question, docs, answer, evaluation, timestamp"
_PAGE = 500


@dataclass
class SqlTable:
    """Rows of `raw_quality_events` (docs and evaluation as JSON text) through SQLAlchemy.

    A day's rows are found without reading the table's history: a query on the timestamp
    (widened by a day on each side, since offsets move a row across UTC midnight) finds the
    day's dated rows, a query on `id` between the first and the last of them brings the rows in
    between, and the undated rows right after them (and before them at the table's start) are
    paged in until a dated row is met. The table wants an index on `timestamp` besides its
    primary key on `id`.

    Every row lands in exactly one day. A row whose `id` is NULL has no place among the others
    (no id span holds it): it goes to the dead letter as `missing_id`, on the day of its
    timestamp, or, without a readable one, on the UTC day it is read (as `SqlDayCounts` counts
    it). Ids of any type are accepted (integers, text, UUIDs): see `row_location`.
    """

    url: str  # may hold a password: shown only through `redacted_sql_url`
    table: str = "raw_quality_events"
    state_path: Path | None = None  # where `days_present` keeps what it has counted (see SqlDayCounts)
    valid_days: tuple[date, date] | None = None  # the days an event may have (see `out_of_range`)
    _engine: Any = field(default=None, init=False, repr=False)

    def __repr__(self) -> str:  # the dataclass's own would print the password
        return f"SqlTable(url={redacted_sql_url(self.url)!r}, table={self.table!r}, state_path={self.state_path!r})"

    def _day(self, stamp) -> date | None:
        """A row's own day for placing rows: None when unreadable or out of range."""
        day = _readable_day(stamp)
        if day is None or (self.valid_days and not self.valid_days[0] <= day <= self.valid_days[1]):
            return None
        return day

    def engine(self):
        if self._engine is None:
            import sqlalchemy as sa

            self._engine = sa.create_engine(self.url)
        return self._engine

    def _connect(self):
        import sqlalchemy as sa

        try:
            connection = self.engine().connect()
            connection.execute(sa.text(f"SELECT 1 FROM {self._quoted_table()} WHERE 1 = 0"))
        except (sa.exc.SQLAlchemyError, ImportError, OSError, ValueError) as error:  # ValueError: e.g. a bad port
            cause = str(getattr(error, "orig", None) or error).strip().splitlines()
            raise SourceUnavailable(
                f"cannot read table {self.table!r} at {redacted_sql_url(self.url)}: {error.__class__.__name__}: "
                f"{cause[0] if cause else ''}"
            ) from None
        return connection

    def _quoted_table(self) -> str:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.]*", self.table):
            raise SourceUnavailable(f"table name {self.table!r} is not a plain SQL identifier")
        return self.table

    def _query(self, connection, where: str, columns: str = _COLUMNS, **params) -> list:
        import sqlalchemy as sa

        return connection.execute(sa.text(f"SELECT {columns} FROM {self._quoted_table()} WHERE {where}"), params).all()

    def judged_chunks(
        self, day: date, max_field_chars: int, batch_size: int, workers: int, scratch: Path
    ) -> Iterator[JudgedChunk]:
        """The day's rows judged in batches here (the database, not the CPU, sets the pace)."""
        for chunk in batched(self.lines_for_day(day), batch_size):
            yield judge_lines(chunk, max_field_chars)

    def lines_for_day(self, day: date) -> Iterator[SourceLine]:
        with self._connect() as connection:
            for row in self._rows_of_day(connection, day):
                yield _row_to_line(self.table, row._mapping, self.valid_days)

    def _rows_of_day(self, connection, day: date) -> list:
        return self._rows_with_id(connection, day) + self._rows_without_id(connection, day)

    def _rows_with_id(self, connection, day: date) -> list:
        low, high = (day - timedelta(days=1)).isoformat(), (day + timedelta(days=2)).isoformat()
        # Ordered by the database, so the first and last ids follow its collation (text ids).
        window = self._query(
            connection, "timestamp >= :low AND timestamp < :high AND id IS NOT NULL ORDER BY id", "id, timestamp", low=low, high=high
        )
        ids = [row_id for row_id, stamp in window if timestamp_date(stamp) == day]
        if not ids:
            return []
        first, last = ids[0], ids[-1]
        rows = self._query(connection, "id >= :first AND id <= :last ORDER BY id", first=first, last=last)
        rows += self._undated_after(connection, last)
        # Rows without a readable timestamp take the day of the nearest dated row before them.
        chosen, carried = [], day
        for row in [*self._undated_before(connection, first), *rows]:
            carried = self._day(row.timestamp) or carried
            if carried == day:
                chosen.append(row)
        return chosen

    def _rows_without_id(self, connection, day: date) -> list:
        """The day's rows whose id is NULL: by their timestamp, or on the day they are read."""
        rows = self._query(connection, "id IS NULL")
        return [row for row in rows if (self._day(row.timestamp) or day_read()) == day]

    def _undated_after(self, connection, last) -> list:
        """The rows after `last` up to the next dated row."""
        found = []
        while True:
            page = self._query(connection, "id > :after ORDER BY id LIMIT :page", after=last, page=_PAGE)
            for row in page:
                if self._day(row.timestamp) is not None:
                    return found
                found.append(row)
            if len(page) < _PAGE:
                return found
            last = page[-1].id

    def _undated_before(self, connection, first) -> list:
        """Rows before `first` when none of them is dated (the table's start): they belong to the
        first dated row after them."""
        before = first
        while True:
            page = self._query(connection, "id < :before ORDER BY id DESC LIMIT :page", "id, timestamp", before=before, page=_PAGE)
            if any(self._day(stamp) is not None for _, stamp in page):
                return []
            if len(page) < _PAGE:
                return self._query(connection, "id < :first ORDER BY id", first=first) if page else []
            before = page[-1][0]

    def changes_after(self, after) -> tuple[set[date], Any]:
        """The days of the rows with an id above `after` (every row when None), and the last id."""
        days: set[date] = set()
        with self._connect() as connection:
            while True:
                page = self._query(
                    connection,
                    "id > :after ORDER BY id LIMIT :page" if after is not None else "id IS NOT NULL ORDER BY id LIMIT :page",
                    "id, timestamp",
                    after=after,
                    page=10_000,
                )
                days |= {day for day in (self._day(stamp) for _, stamp in page) if day is not None}
                after = page[-1][0] if page else after
                if len(page) < 10_000:
                    return days, after

    def fingerprint(self, day: date) -> str:
        """The day's rows by count and ids: a new row of the day changes it."""
        with self._connect() as connection:
            rows = self._rows_of_day(connection, day)
        return hashlib.sha256(orjson.dumps([str(row.id) for row in rows])).hexdigest()

    def days_present(self) -> Counter:
        """Rows per day, counted incrementally: only rows with an id above the last one counted
        are read (ids must grow as rows are inserted, as identity and serial keys do); rows
        without an id are counted afresh each time (they have no place to resume from)."""
        counts = SqlDayCounts.load(self.state_path)
        with self._connect() as connection:
            while True:
                page = self._query(
                    connection,
                    "id > :after ORDER BY id LIMIT :page" if counts.after is not None else "id IS NOT NULL ORDER BY id LIMIT :page",
                    "id, timestamp",
                    after=counts.after,
                    page=10_000,
                )
                counts.fold(page, self._day)
                if len(page) < 10_000:
                    break
            without_id = self._query(connection, "id IS NULL", "timestamp")
        counts.save(self.state_path)
        return counts.present() + Counter(self._day(stamp) or day_read() for (stamp,) in without_id)


def redacted_sql_url(url: str) -> str:
    """The URL as it may be shown: its password masked; a URL SQLAlchemy cannot read is not
    shown at all (where a password would sit in it is unknown)."""
    import sqlalchemy as sa

    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except (sa.exc.ArgumentError, ValueError):
        return "<a URL SQLAlchemy cannot read>"


def _readable_day(stamp) -> date | None:
    return timestamp_date(stamp) if stamp is not None else None


def day_read() -> date:
    """Where rows with no readable day of their own and no neighbour to take one from go: the
    UTC day they are read."""
    return datetime.now(UTC).date()


@dataclass
class SqlDayCounts:
    """Rows per day of a SQL table by the neighbour rule, and the last id counted."""

    after: Any = None  # the last id folded in
    carried: str | None = None  # the day of the last dated row
    waiting: int = 0  # undated rows before the table's first dated row
    days: dict[str, int] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path | None) -> SqlDayCounts:
        return cls(**orjson.loads(path.read_bytes())) if path is not None and path.exists() else cls()

    def save(self, path: Path | None) -> None:
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            staged = path.with_name(f".{path.name}.tmp-{os.getpid()}")
            staged.write_bytes(orjson.dumps(self.__dict__))
            os.replace(staged, path)

    def fold(self, rows, day_of=None) -> None:
        """`day_of`: a row's own day for placing it (default: its readable timestamp's)."""
        for row_id, stamp in rows:
            row_day = (day_of or _readable_day)(stamp)
            if row_day is None and self.carried is None:
                self.waiting += 1
            else:
                day = row_day.isoformat() if row_day else self.carried
                self.days[day] = self.days.get(day, 0) + 1 + self.waiting
                self.waiting = 0
                self.carried = day
            self.after = row_id

    def present(self) -> Counter:
        counts = Counter({date.fromisoformat(day): n for day, n in self.days.items()})
        if self.waiting:  # a table with no readable timestamp at all: its rows belong to the day they are read
            counts[day_read()] += self.waiting
        return counts


_INT64 = range(-(1 << 63), 1 << 63)


def row_location(table: str, row_id: Any) -> tuple[str, int | None]:
    """Where a row sits, as `source` and `source_line`: an integer id is the row's line number
    (`sql:<table>`, id), any other id (text, a UUID, a decimal) is written as text after the
    table's name (`sql:<table>#<id>`, no line number), and a row without an id has only its table."""
    if isinstance(row_id, int) and not isinstance(row_id, bool) and row_id in _INT64:
        return f"sql:{table}", row_id
    if row_id is None:
        return f"sql:{table}", None
    return f"sql:{table}#{row_id}", None


def _row_to_line(table: str, row, valid_days: tuple[date, date] | None = None) -> SourceLine:
    """A table row as the event object it encodes; JSON columns are decoded, bad ones marked."""
    source, number = row_location(table, row["id"])
    if row["id"] is None:
        missing = Rejection(MISSING_ID, "the row has no id, so its place in the table is unknown; give it one")
        return SourceLine(source, number, _row_text(row), missing)
    own_day = _readable_day(row["timestamp"])
    if own_day is not None and valid_days and not valid_days[0] <= own_day <= valid_days[1]:
        return SourceLine(source, number, _row_text(row), out_of_range_rejection(valid_days))
    event: dict[str, Any] = {}
    for column in ("request_id", "question", "answer", "timestamp"):
        if row[column] is not None:
            event[column] = row[column]
    for column in ("docs", "evaluation"):
        value = row[column]
        if isinstance(value, (bytes, str)):
            decoded = decode_json(value)
            if decoded is UNDECODABLE:
                bad = Rejection(INVALID_JSON, f"column {column} is not valid JSON")
                return SourceLine(source, number, _row_text(row), bad)
            event[column] = decoded
        elif value is not None:  # a JSON/JSONB column the driver already decoded
            event[column] = value
    return SourceLine(source, number, _row_text(row), event)


def _row_text(row) -> str:
    """The row as it was stored, for the dead letter."""
    columns = ("request_id", "question", "docs", "answer", "evaluation", "timestamp")
    return orjson.dumps({column: row[column] for column in columns}, default=str).decode()
