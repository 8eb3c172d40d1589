"""The signatures of the samples each day kept, so a day's near-duplicate search looks earlier
days up by band key instead of reading them: its cost follows the day's size, not history's.

`<state_dir>/near-duplicates.sqlite`: `kept(day, sample_id, signature)` and
`band_keys(key, day, sample_id)` indexed by key. A day's rows are replaced whole when it is
materialized again, and a day only ever looks at days before it, so a re-run never meets its own
earlier signatures.
"""

from __future__ import annotations

import sqlite3
from collections import defaultdict
from pathlib import Path

import numpy as np

from rag_sft.core.near_duplicates import EarlierSample

_SCHEMA = """
CREATE TABLE IF NOT EXISTS kept (day TEXT NOT NULL, sample_id TEXT NOT NULL, signature BLOB NOT NULL,
                                 PRIMARY KEY (day, sample_id));
CREATE TABLE IF NOT EXISTS band_keys (key INTEGER NOT NULL, day TEXT NOT NULL, sample_id TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS band_keys_by_key ON band_keys (key);
CREATE INDEX IF NOT EXISTS band_keys_by_day ON band_keys (day);
"""


class NearDuplicateIndex:
    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, timeout=60)
        self._db.executescript("PRAGMA journal_mode=WAL;" + _SCHEMA)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> NearDuplicateIndex:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def earlier(self, day: str, keys: np.ndarray) -> dict[int, list[EarlierSample]]:
        """The samples kept on days before `day` that share one of `keys`, by key."""
        db = self._db
        db.execute("CREATE TEMP TABLE IF NOT EXISTS wanted (key INTEGER PRIMARY KEY)")
        db.execute("DELETE FROM wanted")
        db.executemany("INSERT OR IGNORE INTO wanted VALUES (?)", ((int(key),) for key in keys))
        rows = db.execute(
            "SELECT b.key, k.day, k.sample_id, k.signature FROM wanted w JOIN band_keys b ON b.key = w.key "
            "JOIN kept k ON k.day = b.day AND k.sample_id = b.sample_id WHERE b.day < ?",
            (day,),
        ).fetchall()
        found: dict[int, list[EarlierSample]] = defaultdict(list)
        for key, earlier_day, sample_id, signature in rows:
            found[key].append(EarlierSample(earlier_day, sample_id, np.frombuffer(signature, dtype=np.uint32)))
        return found

    def replace_day(self, day: str, sample_ids: list[str], signatures: np.ndarray, keys: np.ndarray) -> None:
        """The day's kept samples, in place of what an earlier run of the day stored."""
        with self._db as db:
            db.execute("DELETE FROM kept WHERE day = ?", (day,))
            db.execute("DELETE FROM band_keys WHERE day = ?", (day,))
            db.executemany(
                "INSERT INTO kept VALUES (?, ?, ?)",
                ((day, sample_id, signature.tobytes()) for sample_id, signature in zip(sample_ids, signatures)),
            )
            db.executemany(
                "INSERT INTO band_keys VALUES (?, ?, ?)",
                ((int(key), day, sample_id) for sample_id, row in zip(sample_ids, keys) for key in row),
            )
