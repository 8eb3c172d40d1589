"""The SQL source: the rows of `raw_quality_events` through SQLAlchemy, a day at a time
(the day a row belongs to: `lines`)."""

from __future__ import annotations

import hashlib
import os
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from rag_sft.core.events import INVALID_JSON, MISSING_ID, Rejection, timestamp_date
from rag_sft.core.ingest import UNDECODABLE, JudgedChunk, SourceLine, batched, decode_json, judge_lines
from rag_sft.io.sources.lines import SourceUnavailable, out_of_range_rejection
from rag_sft.io.sql_urls import redacted_sql_url

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
