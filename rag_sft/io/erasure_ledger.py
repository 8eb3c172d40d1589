"""The erasure ledger: `<data_dir>/state/erasure.sqlite`, every request_id erased on request.

It is kept beside the pipeline's other state (not in the Dagster instance: ingest must honour
it whichever instance runs the day, and it must outlive the runs that recorded it). Ingest reads
it at the start of each day, so a re-run or a late copy of an erased event never brings it back.
It keeps the ids only (never a question or an answer): that is what it needs to recognise them.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable
from contextlib import closing
from pathlib import Path

LEDGER_FILE = "erasure.sqlite"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS erased (
    request_id TEXT PRIMARY KEY,
    erased_at REAL NOT NULL,
    erasure_run TEXT NOT NULL
) WITHOUT ROWID
"""


class ErasureLedger:
    def __init__(self, state_dir: Path):
        self.path = Path(state_dir) / LEDGER_FILE

    def record(self, request_ids: Iterable[str], erasure_run: str) -> list[str]:
        """Add the ids (those already there keep their first erasure); returns the new ones."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with closing(self._connect()) as connection, connection:
            connection.execute(_SCHEMA)
            new = []
            for request_id in request_ids:
                inserted = connection.execute(
                    "INSERT OR IGNORE INTO erased VALUES (?, ?, ?)", (request_id, time.time(), erasure_run)
                ).rowcount
                if inserted:
                    new.append(request_id)
            return new

    def request_ids(self) -> list[str]:
        """Every erased id, sorted (none when nothing was ever erased: no file is created)."""
        if not self.path.exists():
            return []
        with closing(self._connect()) as connection:
            connection.execute(_SCHEMA)
            return [row[0] for row in connection.execute("SELECT request_id FROM erased ORDER BY request_id")]

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=60)
