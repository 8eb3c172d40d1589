"""The signatures of the samples each day kept, so a day's near-duplicate search looks earlier
days up by band key instead of reading them: its cost follows the day's size, not history's.

`<state_dir>/near-duplicates.sqlite`: `kept(id, day, sample_id, signature)` and
`band_keys(key, kept)`, keyed by band key (a 150,000-sample day has 750,000 band keys, written
in key order). A day only ever looks at days before it, and its rows are replaced when it is
materialized again, so a re-run never meets its own earlier signatures. The band keys of a
replaced day are left behind (a look-up joins them to `kept`, so they are never seen) and swept
once they outnumber the live ones: an index on `kept` would cost more on every write than the
sweep costs, spread over the re-runs that made it necessary.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import orjson

from rag_sft.core.near_duplicates import EarlierSamples

_KEYS_PER_QUERY = 4096
_SCHEMA = """
CREATE TABLE IF NOT EXISTS kept (id INTEGER PRIMARY KEY, day TEXT NOT NULL, sample_id TEXT NOT NULL,
                                 signature BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS kept_by_day ON kept (day);
CREATE TABLE IF NOT EXISTS band_keys (key INTEGER NOT NULL, kept INTEGER NOT NULL, PRIMARY KEY (key, kept)) WITHOUT ROWID;
-- next_id: kept ids are never reused, so a stale band key never points at a newer sample.
CREATE TABLE IF NOT EXISTS band_key_rows (live INTEGER NOT NULL, stale INTEGER NOT NULL, next_id INTEGER NOT NULL);
INSERT INTO band_key_rows SELECT 0, 0, 1 WHERE NOT EXISTS (SELECT 1 FROM band_key_rows);
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

    def earlier(self, day: str, keys: np.ndarray) -> EarlierSamples:
        """The samples kept on days before `day` that share one of `keys`."""
        db = self._db
        if db.execute("SELECT 1 FROM kept WHERE day < ? LIMIT 1", (day,)).fetchone() is None:
            return EarlierSamples.none()  # the first day of the source: nothing to look up
        # The keys travel as JSON arrays of a few thousand (json_each): far cheaper than a row per key.
        unique = np.unique(keys)
        pairs = [
            pair
            for start in range(0, len(unique), _KEYS_PER_QUERY)
            for pair in db.execute(
                "SELECT b.key, b.kept FROM band_keys b JOIN kept k ON k.id = b.kept "
                "WHERE b.key IN (SELECT value FROM json_each(?)) AND k.day < ?",
                (orjson.dumps(unique[start : start + _KEYS_PER_QUERY], option=orjson.OPT_SERIALIZE_NUMPY).decode(), day),
            )
        ]
        if not pairs:
            return EarlierSamples.none()
        found_keys, kept = (np.array(column, dtype=np.int64) for column in zip(*pairs))
        ids, rows = np.unique(kept, return_inverse=True)  # each sample's signature is read once
        samples = [
            sample
            for start in range(0, len(ids), _KEYS_PER_QUERY)
            for sample in db.execute(
                "SELECT day, sample_id, signature FROM kept WHERE id IN (SELECT value FROM json_each(?)) ORDER BY id",
                (orjson.dumps(ids[start : start + _KEYS_PER_QUERY], option=orjson.OPT_SERIALIZE_NUMPY).decode(),),
            )
        ]
        days, sample_ids, signatures = zip(*samples)
        return EarlierSamples(
            found_keys,
            rows,
            list(days),
            list(sample_ids),
            np.frombuffer(b"".join(signatures), dtype=np.uint32).reshape(len(samples), -1),
        )

    def replace_day(self, day: str, sample_ids: list[str], signatures: np.ndarray, keys: np.ndarray) -> None:
        """The day's kept samples, in place of what an earlier run of the day stored."""
        with self._db as db:
            replaced = db.execute("SELECT COUNT(*) FROM kept WHERE day = ?", (day,)).fetchone()[0] * keys.shape[1]
            db.execute("DELETE FROM kept WHERE day = ?", (day,))
            first = db.execute("SELECT next_id FROM band_key_rows").fetchone()[0]
            ids = np.arange(first, first + len(sample_ids), dtype=np.int64)
            db.executemany(
                "INSERT INTO kept VALUES (?, ?, ?, ?)",
                zip(ids.tolist(), [day] * len(sample_ids), sample_ids, map(np.ndarray.tobytes, signatures)),
            )
            flat_keys, owners = keys.ravel(), np.repeat(ids, keys.shape[1])
            order = np.argsort(flat_keys, kind="stable")
            db.executemany("INSERT INTO band_keys VALUES (?, ?)", zip(flat_keys[order].tolist(), owners[order].tolist()))
            db.execute(
                "UPDATE band_key_rows SET live = live + ? - ?, stale = stale + ?, next_id = ?",
                (len(flat_keys), replaced, replaced, first + len(sample_ids)),
            )
            live, stale = db.execute("SELECT live, stale FROM band_key_rows").fetchone()
            if stale > live:
                db.execute("DELETE FROM band_keys WHERE kept NOT IN (SELECT id FROM kept)")
                db.execute("UPDATE band_key_rows SET stale = 0")
