"""Which days exported each request_id, so a request shipped again on a later day is a duplicate
of the day that exported it without reading earlier days: a day's lookups follow its own size.

`<state_dir>/request-days.sqlite`: `request_days(request_id, day)`, written by `sft_records`
(a held-back day exported nothing, so it holds nothing). First seen = the earliest day that
exported the request; a day only looks at days before it, and its own rows are replaced when it
is materialized again, so a re-run never meets itself.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from pathlib import Path

import orjson

REQUEST_INDEX = "request-days.sqlite"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS request_days (request_id TEXT NOT NULL, day TEXT NOT NULL, PRIMARY KEY (request_id, day))
    WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS request_days_by_day ON request_days (day);
"""


class RequestIndex:
    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, timeout=60)
        self._db.executescript("PRAGMA journal_mode=WAL;" + _SCHEMA)
        self._no_earlier: dict[str, bool] = {}

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> RequestIndex:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def first_days(self, day: str, request_ids: Iterable[str]) -> dict[str, str]:
        """The earliest day before `day` that exported each of these request_ids (absent: none)."""
        db = self._db
        if self._first_day_of_source(day):
            return {}
        # The ids travel as one JSON array (json_each): far cheaper than a row per id in a temp table.
        rows = db.execute(
            "SELECT request_id, MIN(day) FROM request_days WHERE request_id IN (SELECT value FROM json_each(?)) "
            "AND day < ? GROUP BY request_id",
            (orjson.dumps(list(request_ids)).decode(), day),
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
        with self._db as db:
            db.execute("DELETE FROM request_days WHERE day = ?", (day,))
            # In key order: the B-tree is filled page by page.
            db.executemany("INSERT OR IGNORE INTO request_days VALUES (?, ?)", ((request_id, day) for request_id in sorted(request_ids)))
