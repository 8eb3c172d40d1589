"""Corrected answers kept by request key, so no answer is paid for twice.

By default one SQLite file under the data folder; several processes on one machine (days
backfilled at once) may share it. Workers on different hosts share a PostgreSQL table instead
(`open_completion_cache` picks by URL). Either way every answer is committed as it arrives, so
a run killed half-way keeps what it was given; only usable answers are stored, so a failed
request is asked again next time.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

import sqlalchemy as sa

from rag_sft.core.llm import Answer
from rag_sft.io.sql_urls import is_postgres_url, redacted_sql_url

_SCHEMA = """
CREATE TABLE IF NOT EXISTS completions (
    key TEXT PRIMARY KEY,
    text TEXT NOT NULL,
    model TEXT NOT NULL,
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    created_at REAL NOT NULL
)
"""
_LOOKUP_CHUNK = 500  # keys per SELECT, under SQLite's bound-parameter limit


class AnswerCache(Protocol):
    def get_many(self, keys: Iterable[str]) -> dict[str, Answer]: ...
    def put(self, key: str, answer: Answer) -> None: ...
    def erase(self, keys: Iterable[str], texts: Iterable[str]) -> int: ...
    def __len__(self) -> int: ...
    def close(self) -> None: ...


class CompletionCache:
    """The SQLite cache (WAL): one file, shared by the processes of one machine."""

    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        # One connection shared by the request threads, serialised by a lock (writes are tiny).
        self._connection = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=60)
        self._lock = threading.Lock()
        with self._lock:
            self._connection.execute("PRAGMA journal_mode=WAL")
            self._connection.execute("PRAGMA synchronous=NORMAL")
            self._connection.execute(_SCHEMA)

    def get_many(self, keys: Iterable[str]) -> dict[str, Answer]:
        wanted = list(dict.fromkeys(keys))
        found: dict[str, Answer] = {}
        with self._lock:
            for start in range(0, len(wanted), _LOOKUP_CHUNK):
                chunk = wanted[start : start + _LOOKUP_CHUNK]
                rows = self._connection.execute(
                    "SELECT key, text, model, prompt_tokens, completion_tokens FROM completions "
                    f"WHERE key IN ({','.join('?' * len(chunk))})",
                    chunk,
                )
                for key, text, model, prompt_tokens, completion_tokens in rows:
                    found[key] = Answer(text, model, prompt_tokens, completion_tokens)
        return found

    def put(self, key: str, answer: Answer) -> None:
        with self._lock:
            self._connection.execute(
                "INSERT OR REPLACE INTO completions VALUES (?, ?, ?, ?, ?, ?)",
                (key, answer.text, answer.model, answer.prompt_tokens, answer.completion_tokens, time.time()),
            )

    def erase(self, keys: Iterable[str], texts: Iterable[str]) -> int:
        """Delete the entries with these keys, and those whose answer is one of `texts` (the same
        answers cached under other settings); then rebuild the file and empty the WAL, as SQLite
        otherwise keeps deleted bytes in free pages and the log. Returns the entries deleted."""
        deleted = 0
        with self._lock:
            for column, values in (("key", list(dict.fromkeys(keys))), ("text", list(dict.fromkeys(texts)))):
                for start in range(0, len(values), _LOOKUP_CHUNK):
                    chunk = values[start : start + _LOOKUP_CHUNK]
                    deleted += self._connection.execute(
                        f"DELETE FROM completions WHERE {column} IN ({','.join('?' * len(chunk))})", chunk
                    ).rowcount
            self._connection.execute("VACUUM")
            self._connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return deleted

    def __len__(self) -> int:
        with self._lock:
            return self._connection.execute("SELECT COUNT(*) FROM completions").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._connection.close()


# Several workers may create the table at once; CREATE TABLE IF NOT EXISTS alone races in
# PostgreSQL (a unique violation in its catalog), so creators take this advisory lock first.
_CREATE_LOCK = 0x7261675F736674  # "rag_sft"


class PostgresCompletionCache:
    """The same table in PostgreSQL, shared by workers on any host. The URL holds a password:
    it is shown only with the password masked."""

    def __init__(self, url: str):
        self.url = url
        # The request threads share the engine's pool; a connection per write keeps each
        # answer committed as it arrives.
        self._engine = sa.create_engine(url, pool_size=4, max_overflow=16, pool_pre_ping=True, hide_parameters=True)
        with self._engine.begin() as connection:
            connection.execute(sa.text("SELECT pg_advisory_xact_lock(:lock)"), {"lock": _CREATE_LOCK})
            connection.execute(sa.text(_SCHEMA.replace("REAL", "DOUBLE PRECISION")))

    def __repr__(self) -> str:
        return f"PostgresCompletionCache({redacted_sql_url(self.url)!r})"

    def get_many(self, keys: Iterable[str]) -> dict[str, Answer]:
        wanted = list(dict.fromkeys(keys))
        found: dict[str, Answer] = {}
        query = sa.text(
            "SELECT key, text, model, prompt_tokens, completion_tokens FROM completions WHERE key = ANY(:keys)"
        )
        with self._engine.connect() as connection:
            for start in range(0, len(wanted), _LOOKUP_CHUNK):
                rows = connection.execute(query, {"keys": wanted[start : start + _LOOKUP_CHUNK]})
                for key, text, model, prompt_tokens, completion_tokens in rows:
                    found[key] = Answer(text, model, prompt_tokens, completion_tokens)
        return found

    def put(self, key: str, answer: Answer) -> None:
        # The upsert is SQLite's INSERT OR REPLACE: two workers answering the same key both succeed.
        with self._engine.begin() as connection:
            connection.execute(
                sa.text(
                    "INSERT INTO completions VALUES (:key, :text, :model, :prompt_tokens, :completion_tokens, :created_at) "
                    "ON CONFLICT (key) DO UPDATE SET text = EXCLUDED.text, model = EXCLUDED.model, "
                    "prompt_tokens = EXCLUDED.prompt_tokens, completion_tokens = EXCLUDED.completion_tokens, "
                    "created_at = EXCLUDED.created_at"
                ),
                {
                    "key": key,
                    "text": answer.text,
                    "model": answer.model,
                    "prompt_tokens": answer.prompt_tokens,
                    "completion_tokens": answer.completion_tokens,
                    "created_at": time.time(),
                },
            )

    def erase(self, keys: Iterable[str], texts: Iterable[str]) -> int:
        """Delete the entries with these keys, and those whose answer is one of `texts`; then
        rewrite the table (VACUUM FULL), as PostgreSQL otherwise keeps deleted rows in its pages
        until they are reused. Returns the entries deleted."""
        deleted = 0
        with self._engine.begin() as connection:
            for column, values in (("key", list(dict.fromkeys(keys))), ("text", list(dict.fromkeys(texts)))):
                for start in range(0, len(values), _LOOKUP_CHUNK):
                    deleted += connection.execute(
                        sa.text(f"DELETE FROM completions WHERE {column} = ANY(:values)"),
                        {"values": values[start : start + _LOOKUP_CHUNK]},
                    ).rowcount
        with self._engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.execute(sa.text("VACUUM FULL completions"))
        return deleted

    def __len__(self) -> int:
        with self._engine.connect() as connection:
            return connection.execute(sa.text("SELECT COUNT(*) FROM completions")).scalar_one()

    def close(self) -> None:
        self._engine.dispose()


def open_completion_cache(url: str, cache_dir: Path) -> AnswerCache:
    """The cache at `url`: a PostgreSQL URL, a `sqlite:///path` URL, or empty for the default
    SQLite file `<cache_dir>/completions.sqlite` (a local folder)."""
    return PostgresCompletionCache(url) if is_postgres_url(url) else CompletionCache(sqlite_cache_path(url, cache_dir))


def sqlite_cache_path(url: str, cache_dir: Path) -> Path:
    """The SQLite file of an empty or `sqlite:///path` cache URL."""
    if not url:
        return Path(cache_dir) / "completions.sqlite"
    if url.startswith("sqlite:///"):
        return Path(url.removeprefix("sqlite:///"))
    raise ValueError(f"the LLM answer cache URL must be postgresql+psycopg2://… or sqlite:///…, got {redacted_sql_url(url)}")
