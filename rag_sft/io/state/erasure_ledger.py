"""The erasure ledger: every request_id erased on request (`<data_dir>/state/erasure.sqlite`,
or a table of the state database: `io/state/state_db.py`).

It is kept beside the pipeline's other state (not in the Dagster instance: ingest must honour
it whichever instance runs the day, and it must outlive the runs that recorded it). Ingest reads
it at the start of each day, so a re-run or a late copy of an erased event never brings it back.
It keeps the ids only (never a question or an answer): that is what it needs to recognise them.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from rag_sft.io.state.state_db import StateDb, StateStore


_SCHEMA = """
CREATE TABLE IF NOT EXISTS erased (
    request_id TEXT PRIMARY KEY,
    erased_at REAL NOT NULL,
    erasure_run TEXT NOT NULL
) WITHOUT ROWID
"""


class ErasureLedger(StateStore):
    FILE = "erasure.sqlite"  # in the local state folder, without a state database

    def __init__(self, db: StateDb):
        super().__init__(db, _SCHEMA)

    def record(self, request_ids: Iterable[str], erasure_run: str) -> list[str]:
        """Add the ids (those already there keep their first erasure); returns the new ones."""
        db = self._db
        wanted = list(dict.fromkeys(request_ids))
        with db.transaction():
            known = {row[0] for row in db.execute(f"SELECT request_id FROM erased WHERE {db.in_list('request_id')}", (db.values(wanted),))}
            new = [request_id for request_id in wanted if request_id not in known]
            now = time.time()
            # Ignoring conflicts: an erasure recorded on another host meanwhile keeps its first date.
            db.insert("erased", ((request_id, now, erasure_run) for request_id in new), ignore_conflicts=True)
        return new

    def request_ids(self) -> list[str]:
        """Every erased id, sorted."""
        return [row[0] for row in self._db.execute("SELECT request_id FROM erased ORDER BY request_id")]
