"""Where the pipeline's shared truth lives: the request index, the near-duplicate index, the
erasure ledger and the training sensor's ledger. By default each is a SQLite file in the local
state folder (one machine, or hosts that take turns with that folder); with
`warehouse.state_url` set to a PostgreSQL URL, they are tables in that database, which workers
on every host share.

The stores write their SQL once, with `?` placeholders and the portable subset both engines
accept; this module holds what differs: placeholders, passing a list of values (SQLite's
`json_each`, PostgreSQL's arrays), bulk inserts (`executemany`, `COPY`), the column types of
the schema, and concurrent creation of the tables.
"""

from __future__ import annotations

import csv
import io
import re
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from itertools import chain
from pathlib import Path
from typing import Any, Protocol, Self

import numpy as np
import orjson
import sqlalchemy as sa
from psycopg2.extensions import AsIs

from rag_sft.io.sql_urls import is_postgres_url, redacted_sql_url

# `state_url` saying so explicitly: SQLite files in the local state folder, on a distributed executor.
LOCAL_STATE = "local"
# Workers may create the tables at once; CREATE TABLE IF NOT EXISTS alone races in PostgreSQL
# (a unique violation in its catalog), so creators take this advisory lock first.
_CREATE_LOCK = 0x7261675F7374  # "rag_st"


class StateDb(Protocol):
    def create(self, schema: str) -> None: ...
    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any: ...
    def in_list(self, column: str) -> str: ...
    def values(self, values: Iterable[Any] | np.ndarray) -> Any: ...
    def insert(self, table: str, rows: Iterable[Sequence[Any]], *, ignore_conflicts: bool = False) -> None: ...
    def grew(self, table: str, rows: int) -> None: ...
    def transaction(self) -> Any: ...
    def close(self) -> None: ...


class StateUnavailable(RuntimeError):
    """The state database cannot be used as configured (named without its password)."""


class SqliteStateDb:
    """One SQLite file (WAL), shared by the processes of one machine."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        # Autocommit outside `transaction()`, as a PostgreSQL connection here: a statement alone is one.
        self._db = sqlite3.connect(path, timeout=60, isolation_level=None)

    def create(self, schema: str) -> None:
        self._db.executescript("PRAGMA journal_mode=WAL;" + schema)

    def execute(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Cursor:
        return self._db.execute(sql, params)

    def in_list(self, column: str) -> str:
        # The values travel as one JSON array: far cheaper than a row per value in a temp table.
        return f"{column} IN (SELECT value FROM json_each(?))"

    def values(self, values: Iterable[Any] | np.ndarray) -> str:
        if isinstance(values, np.ndarray):
            return orjson.dumps(values, option=orjson.OPT_SERIALIZE_NUMPY).decode()
        return orjson.dumps(list(values)).decode()

    def insert(self, table: str, rows: Iterable[Sequence[Any]], *, ignore_conflicts: bool = False) -> None:
        rows = iter(rows)
        first = next(rows, None)
        if first is None:
            return
        verb = "INSERT OR IGNORE" if ignore_conflicts else "INSERT"
        self._db.executemany(f"{verb} INTO {table} VALUES ({','.join('?' * len(first))})", chain((first,), rows))

    def grew(self, table: str, rows: int) -> None:
        """Nothing to do: SQLite's planner takes the primary key's index without statistics."""

    def transaction(self):
        return sqlite_transaction(self._db)

    def close(self) -> None:
        self._db.close()


class PostgresStateDb:
    """The same tables in one PostgreSQL database, for workers on any host. The URL holds a
    password: it is shown only with the password masked."""

    def __init__(self, url: str):
        self.url = url
        self._engine = sa.create_engine(url, poolclass=sa.NullPool, hide_parameters=True)
        self._db = self._engine.raw_connection()  # psycopg2's own: COPY, arrays
        self._in_transaction = False

    def __repr__(self) -> str:
        return f"PostgresStateDb({redacted_sql_url(self.url)!r})"

    def create(self, schema: str) -> None:
        # Most opens find everything there: checked without a lock, since CREATE INDEX IF NOT
        # EXISTS locks its table (waiting for any writer) before it looks.
        names = re.findall(r"CREATE (?:TABLE|INDEX) IF NOT EXISTS (\w+)", schema)
        with self._statement() as cursor:
            cursor.execute("SELECT bool_and(to_regclass(name) IS NOT NULL) FROM unnest(%s) AS name", (names,))
            if cursor.fetchone()[0]:
                return
        with self.transaction(), self._db.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", (_CREATE_LOCK,))
            for statement in filter(str.strip, _postgres_schema(schema).split(";")):
                cursor.execute(statement)

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        with self._statement() as cursor:  # one cursor per statement: its rows are all fetched, and stay
            cursor.execute(sql.replace("?", "%s"), tuple(params) or None)
        return cursor

    @contextmanager
    def _statement(self) -> Iterator[Any]:
        """A cursor; outside a transaction its statement is one of its own: committed, or rolled
        back on error (a connection left in a failed transaction refuses everything after)."""
        cursor = self._db.cursor()
        if self._in_transaction:
            yield cursor
            return
        try:
            yield cursor
        except BaseException:
            self._db.rollback()
            raise
        self._db.commit()

    def in_list(self, column: str) -> str:
        # A join with the unnested list: one index probe per value, whatever the table's size
        # (`= ANY` is planned as a scan of the whole table once it is large next to the list).
        return f"{column} IN (SELECT unnest(?))"

    def values(self, values: Iterable[Any] | np.ndarray) -> Any:
        listed = values.tolist() if isinstance(values, np.ndarray) else list(values)
        if not listed:  # an empty array literal has no type for unnest: give it the column's
            return AsIs("ARRAY[]::bigint[]" if isinstance(values, np.ndarray) else "ARRAY[]::text[]")
        return listed

    def insert(self, table: str, rows: Iterable[Sequence[Any]], *, ignore_conflicts: bool = False) -> None:
        """COPY: the rows travel as one CSV stream (bytes as bytea's hex form)."""
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n", quoting=csv.QUOTE_NONNUMERIC)  # "" stays a string, not NULL
        written = 0
        for row in rows:
            writer.writerow(["\\x" + value.hex() if isinstance(value, bytes) else value for value in row])
            written += 1
        if not written:
            return
        buffer.seek(0)
        target = f"incoming_{table}" if ignore_conflicts else table
        with self._statement() as cursor:
            if ignore_conflicts:  # COPY has no ON CONFLICT: through a temporary copy of the table
                cursor.execute(f"CREATE TEMPORARY TABLE IF NOT EXISTS {target} (LIKE {table})")
            cursor.copy_expert(f"COPY {target} FROM STDIN WITH (FORMAT csv)", buffer)
            if ignore_conflicts:
                cursor.execute(f"INSERT INTO {table} SELECT * FROM {target} ON CONFLICT DO NOTHING")
                cursor.execute(f"TRUNCATE {target}")

    def grew(self, table: str, rows: int) -> None:
        """Statistics for the planner once `rows` new rows at least doubled the table (ANALYZE
        samples a bounded number of rows): without them it scans whole tables for look-ups that
        the index answers. So they are taken a logarithmic number of times; autovacuum keeps
        them afterwards."""
        with self._statement() as cursor:
            cursor.execute("SELECT reltuples FROM pg_class WHERE oid = %s::regclass", (table,))
            (counted,) = cursor.fetchone()
            if counted < rows:  # -1: never analyzed
                cursor.execute(f"ANALYZE {table}")

    @contextmanager
    def hold(self, name: str) -> Iterator[bool]:
        """A lock named `name` held by this connection until the block ends, excluding holders on
        every host; yields whether it had to wait for another holder."""
        with self._statement() as cursor:
            cursor.execute("SELECT pg_try_advisory_lock(hashtext(%s))", (name,))
            waited = not cursor.fetchone()[0]
            if waited:
                cursor.execute("SELECT pg_advisory_lock(hashtext(%s))", (name,))
        try:
            yield waited
        finally:
            with self._statement() as cursor:
                cursor.execute("SELECT pg_advisory_unlock(hashtext(%s))", (name,))

    @contextmanager
    def transaction(self) -> Iterator[None]:
        self._in_transaction = True
        try:
            yield
            self._db.commit()
        except BaseException:
            self._db.rollback()
            raise
        finally:
            self._in_transaction = False

    def close(self) -> None:
        self._db.close()
        self._engine.dispose()


# When each store started to describe the data: the time of its creation (a lost state folder
# comes back empty and young), 0 for a store that describes everything before it (one found
# holding rows when this table came in, or one rebuilt from the data: `rag-sft state rebuild`).
# One row per store: a state database holds every store's tables.
_BIRTH_SCHEMA = """
CREATE TABLE IF NOT EXISTS store_birth (store TEXT PRIMARY KEY, describes_since REAL NOT NULL);
"""


class StateStore:
    """A store over its own connection to the state database, closed with it."""

    FILE: str  # its SQLite file in the local state folder, when there is no state database
    COUNTERS: tuple[str, ...] = ()  # one-row tables seeded at creation: replaced on import

    def __init__(self, db: StateDb, schema: str):
        self._db = db
        self._schema = schema.rstrip().rstrip(";") + ";\n" + _BIRTH_SCHEMA
        try:
            db.create(self._schema)
            if db.execute("SELECT 1 FROM store_birth WHERE store = ?", (self.FILE,)).fetchone() is None:
                self._record_birth()
        except BaseException:
            db.close()
            raise

    def _tables(self) -> list[str]:
        return re.findall(r"CREATE TABLE IF NOT EXISTS (\w+)", self._schema)

    def _record_birth(self) -> None:
        """Born now when empty; a store that already holds rows (made before births were
        recorded) has described the data all along."""
        holds_rows = any(
            self._db.execute(f"SELECT 1 FROM {table} LIMIT 1").fetchone()
            for table in self._tables()
            if table not in (*self.COUNTERS, "store_birth")
        )
        # A store opened at once elsewhere keeps the first birth.
        self._db.execute(
            "INSERT INTO store_birth VALUES (?, ?) ON CONFLICT DO NOTHING", (self.FILE, 0.0 if holds_rows else time.time())
        )

    def describes_since(self) -> float:
        """The time from which this store saw the data it describes (0: from the start)."""
        return float(self._db.execute("SELECT describes_since FROM store_birth WHERE store = ?", (self.FILE,)).fetchone()[0])

    def set_describes_since(self, timestamp: float) -> None:
        """0 once rebuilt from the data: the store describes everything before."""
        self._db.execute("UPDATE store_birth SET describes_since = ? WHERE store = ?", (timestamp, self.FILE))

    def close(self) -> None:
        self._db.close()

    def import_file(self, path: Path, batch_rows: int = 100_000) -> dict[str, int]:
        """The rows of this store's SQLite file copied in, in one transaction (refused where the
        database already holds rows: nothing is merged); rows copied per table."""
        source = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        copied = {}
        try:
            with self._db.transaction():
                for table in self._tables():
                    if table == "store_birth":  # the file's birth (a file older than births: 0)
                        self._db.execute("DELETE FROM store_birth WHERE store = ?", (self.FILE,))
                        known = source.execute("SELECT 1 FROM sqlite_master WHERE name = 'store_birth'").fetchone()
                        born = source.execute("SELECT * FROM store_birth WHERE store = ?", (self.FILE,)).fetchall() if known else []
                        self._db.insert(table, born or [(self.FILE, 0.0)])
                        continue
                    if table in self.COUNTERS:
                        self._db.execute(f"DELETE FROM {table}")
                    elif self._db.execute(f"SELECT 1 FROM {table} LIMIT 1").fetchone():
                        raise StateUnavailable(f"the state database's table {table} already holds rows: {path} is not imported")
                    rows = source.execute(f"SELECT * FROM {table}")
                    copied[table] = 0
                    while batch := rows.fetchmany(batch_rows):
                        self._db.insert(table, batch)
                        copied[table] += len(batch)
                    self._db.grew(table, copied[table])
        finally:
            source.close()
        return copied

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@contextmanager
def sqlite_transaction(db: sqlite3.Connection, begin: str = "BEGIN") -> Iterator[None]:
    """A transaction on an autocommit connection (isolation_level=None): committed when the
    block ends, else rolled back. `BEGIN IMMEDIATE` takes the write lock at once."""
    db.execute(begin)
    try:
        yield
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def open_state_db(url: str, path: Path) -> StateDb:
    """A PostgreSQL URL's database, else the SQLite file `path`."""
    if not url:
        return SqliteStateDb(path)
    if is_postgres_url(url):
        return PostgresStateDb(url)
    raise ValueError(f"the state database URL must be postgresql+psycopg2://…, got {redacted_sql_url(url)}")


def _postgres_schema(schema: str) -> str:
    """SQLite's DDL in PostgreSQL's types: 64-bit integers, bytea, double precision, no rowid clause."""
    schema = re.sub(r"--[^\n]*", "", schema)
    for sqlite_type, postgres_type in (("INTEGER", "BIGINT"), ("BLOB", "BYTEA"), ("REAL", "DOUBLE PRECISION")):
        schema = re.sub(rf"\b{sqlite_type}\b", postgres_type, schema)
    return re.sub(r"\bWITHOUT ROWID\b", "", schema)
