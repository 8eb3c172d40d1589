"""The signatures of the samples each day kept, so a day's near-duplicate search looks earlier
days up by band key instead of reading them: its cost follows the day's size, not history's.

`kept(id, day, sample_id, signature)` and `band_keys(key, kept)` (`<state_dir>/near-duplicates.sqlite`,
or tables of the state database: `io/state/state_db.py`), keyed by band key (a 150,000-sample day has 750,000 band keys, written
in key order). A day only ever looks at days before it, and its rows are replaced when it is
materialized again, so a re-run never meets its own earlier signatures. The band keys of a
replaced day are left behind (a look-up joins them to `kept`, so they are never seen) and swept
once they outnumber the live ones: an index on `kept` would cost more on every write than the
sweep costs, spread over the re-runs that made it necessary.
"""

from __future__ import annotations

import numpy as np

from rag_sft.core.near_duplicates import EarlierSamples
from rag_sft.io.state.state_db import StateDb, StateStore

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


class NearDuplicateIndex(StateStore):
    FILE = "near-duplicates.sqlite"  # in the local state folder, without a state database
    COUNTERS = ("band_key_rows",)

    def __init__(self, db: StateDb):
        super().__init__(db, _SCHEMA)

    def earlier(self, day: str, keys: np.ndarray) -> EarlierSamples:
        """The samples kept on days before `day` that share one of `keys`."""
        db = self._db
        if db.execute("SELECT 1 FROM kept WHERE day < ? LIMIT 1", (day,)).fetchone() is None:
            return EarlierSamples.none()  # the first day of the source: nothing to look up
        # The keys travel a few thousand at a time.
        unique = np.unique(keys)
        pairs = [
            pair
            for start in range(0, len(unique), _KEYS_PER_QUERY)
            for pair in db.execute(
                f"SELECT b.key, b.kept FROM band_keys b JOIN kept k ON k.id = b.kept WHERE {db.in_list('b.key')} AND k.day < ?",
                (db.values(unique[start : start + _KEYS_PER_QUERY]), day),
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
                f"SELECT day, sample_id, signature FROM kept WHERE {db.in_list('id')} ORDER BY id",
                (db.values(ids[start : start + _KEYS_PER_QUERY]),),
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
        db = self._db
        with db.transaction():
            # The ids are reserved first: the row stays locked until the commit, so days written
            # at once (on other hosts too) never share an id.
            (end,) = db.execute("UPDATE band_key_rows SET next_id = next_id + ? RETURNING next_id", (len(sample_ids),)).fetchall()[0]
            replaced = db.execute("SELECT COUNT(*) FROM kept WHERE day = ?", (day,)).fetchone()[0] * keys.shape[1]
            db.execute("DELETE FROM kept WHERE day = ?", (day,))
            ids = np.arange(end - len(sample_ids), end, dtype=np.int64)
            db.insert("kept", zip(ids.tolist(), [day] * len(sample_ids), sample_ids, map(np.ndarray.tobytes, signatures)))
            flat_keys, owners = keys.ravel(), np.repeat(ids, keys.shape[1])
            order = np.argsort(flat_keys, kind="stable")
            db.insert("band_keys", zip(flat_keys[order].tolist(), owners[order].tolist()))
            db.grew("kept", len(sample_ids))
            db.grew("band_keys", len(flat_keys))
            (live, stale) = db.execute(
                "UPDATE band_key_rows SET live = live + ? - ?, stale = stale + ? RETURNING live, stale",
                (len(flat_keys), replaced, replaced),
            ).fetchall()[0]
            if stale > live:
                db.execute("DELETE FROM band_keys WHERE kept NOT IN (SELECT id FROM kept)")
                db.execute("UPDATE band_key_rows SET stale = 0")

    def erase(self, sample_ids_by_day: dict[str, list[str]]) -> int:
        """Forget these samples (their requests were erased), so no later question is set aside as
        a near-duplicate of a sample that no longer exists; returns the samples deleted. Their
        band keys go too (derived from the erased question): a scan of `band_keys`, which has
        no index by sample, paid only by an erasure."""
        db = self._db
        deleted = 0
        with db.transaction():
            for day, ids in sample_ids_by_day.items():
                erased = f"SELECT id FROM kept WHERE day = ? AND {db.in_list('sample_id')}"
                keys = db.execute(f"DELETE FROM band_keys WHERE kept IN ({erased})", (day, db.values(ids))).rowcount
                db.execute("UPDATE band_key_rows SET live = live - ?", (keys,))
                deleted += db.execute(f"DELETE FROM kept WHERE day = ? AND {db.in_list('sample_id')}", (day, db.values(ids))).rowcount
        return deleted

    def clear(self) -> None:
        """Forget every day (before a rebuild from the warehouse); kept ids are still never reused."""
        with self._db.transaction():
            self._db.execute("DELETE FROM band_keys")
            self._db.execute("DELETE FROM kept")
            self._db.execute("UPDATE band_key_rows SET live = 0, stale = 0")
