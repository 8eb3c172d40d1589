"""Corrected answers kept on disk by request key, so no answer is paid for twice.

One SQLite file under the data folder. Every answer is committed as it arrives, so a run
killed half-way keeps what it was given; only usable answers are stored, so a failed
request is asked again next time. Several processes (days backfilled at once) may share it.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterable
from pathlib import Path

from rag_sft.core.llm import Answer

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


class CompletionCache:
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
