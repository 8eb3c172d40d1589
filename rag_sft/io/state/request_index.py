"""Which days exported each request_id, so a request shipped again on a later day is a duplicate
of the day that exported it without reading earlier days: a day's lookups follow its own size.

`request_days(request_id, day)` (`<state_dir>/request-days.sqlite`, or a table of the state
database: `io/state/state_db.py`), written by `sft_records`
(a held-back day exported nothing, so it holds nothing). First seen = the earliest day that
exported the request; a day only looks at days before it, and its own rows are replaced when it
is materialized again, so a re-run never meets itself.
"""

from __future__ import annotations

from collections.abc import Iterable

from rag_sft.io.state.state_db import StateDb, StateStore

_SCHEMA = """
CREATE TABLE IF NOT EXISTS request_days (request_id TEXT NOT NULL, day TEXT NOT NULL, PRIMARY KEY (request_id, day))
    WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS request_days_by_day ON request_days (day);
"""


class RequestIndex(StateStore):
    FILE = "request-days.sqlite"  # in the local state folder, without a state database

    def __init__(self, db: StateDb):
        super().__init__(db, _SCHEMA)
        self._no_earlier: dict[str, bool] = {}

    def first_days(self, day: str, request_ids: Iterable[str]) -> dict[str, str]:
        """The earliest day before `day` that exported each of these request_ids (absent: none)."""
        db = self._db
        if self._first_day_of_source(day):
            return {}
        rows = db.execute(
            f"SELECT request_id, MIN(day) FROM request_days WHERE {db.in_list('request_id')} AND day < ? GROUP BY request_id",
            (db.values(request_ids), day),
        )
        return dict(rows.fetchall())

    def _first_day_of_source(self, day: str) -> bool:
        """No day before `day` exported anything (asked once per run of the day; an earlier day
        that a concurrent run fills in meanwhile counts when the day runs again, as an earlier
        day materialized after a later one does)."""
        if day not in self._no_earlier:
            self._no_earlier[day] = self._db.execute("SELECT 1 FROM request_days WHERE day < ? LIMIT 1", (day,)).fetchone() is None
        return self._no_earlier[day]

    def replace_day(self, day: str, request_ids: Iterable[str]) -> None:
        """The request_ids the day exported, in place of an earlier run's."""
        with self._db.transaction():
            self._db.execute("DELETE FROM request_days WHERE day = ?", (day,))
            # Each once, in key order: the B-tree is filled page by page.
            unique = sorted(set(request_ids))
            self._db.insert("request_days", ((request_id, day) for request_id in unique))
            self._db.grew("request_days", len(unique))

    def erase(self, request_ids: list[str]) -> int:
        """Forget these requests (erased on request); returns the rows deleted."""
        db = self._db
        with db.transaction():
            return db.execute(f"DELETE FROM request_days WHERE {db.in_list('request_id')}", (db.values(request_ids),)).rowcount

    def clear(self) -> None:
        """Forget every day (before a rebuild from the warehouse)."""
        self._db.execute("DELETE FROM request_days")
