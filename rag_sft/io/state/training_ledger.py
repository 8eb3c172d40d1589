"""The training sensor's memory: `<state_dir>/training_ledger.sqlite`, or tables of the state
database (`io/state/state_db.py`), where it outlives the daemon's machine (a pod restarted elsewhere).

It holds what grows with history, so the sensor's cursor does not (Dagster copies the cursor
into every tick): the export ledger folded from the event log, the exported sample_ids of each
exportable day (read once per content hash of the day's JSONL), and the sample_ids trained on.
A tick reads one row per day (the ledger, the untrained count) and the files of the days whose
export changed; a successful training run visits the samples not trained on yet, once.

Losing it is safe for the ledger (the sensor folds the event log again from the start)
but forgets what was trained on: every exported sample then counts as new.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Iterator, Mapping

import msgspec

from rag_sft.core.trigger import ExportedDay, ExportLedger
from rag_sft.io.registry.dataset_versions import DatasetVersions
from rag_sft.io.state.state_db import StateStore
from rag_sft.io.storage.location import Location, open_lines

_SCHEMA = """
CREATE TABLE IF NOT EXISTS watermarks (asset TEXT PRIMARY KEY, storage_id INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS exports (
    asset TEXT NOT NULL, day TEXT NOT NULL, entry TEXT NOT NULL, PRIMARY KEY (asset, day)
);
-- The days whose sample_ids are read: which export (sha256), and how many are not trained on yet.
CREATE TABLE IF NOT EXISTS sampled (day TEXT PRIMARY KEY, sha256 TEXT NOT NULL, untrained INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS samples (
    day TEXT NOT NULL, sample_id TEXT NOT NULL, new INTEGER NOT NULL, PRIMARY KEY (day, sample_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS samples_not_trained ON samples (day) WHERE new = 1;
CREATE TABLE IF NOT EXISTS trained (sample_id TEXT PRIMARY KEY) WITHOUT ROWID;
"""


class TrainingLedger(StateStore):
    """Changed in one transaction (`with store.transaction():`): committed when the block ends,
    else rolled back."""

    FILE = "training_ledger.sqlite"

    def __init__(self, db):
        super().__init__(db, _SCHEMA)

    def transaction(self):
        return self._db.transaction()

    # --- the export ledger -----------------------------------------------------------------
    def export_ledger(self, cursor_after: Mapping[str, int]) -> ExportLedger:
        """The stored ledger, to be folded on from the older of its own watermarks and the
        cursor's: a lost file or a reset cursor means folding the event log again from the start."""
        ledger = ExportLedger()
        for asset, day, entry in self._db.execute("SELECT asset, day, entry FROM exports"):
            (ledger.jsonl if asset == "sft_jsonl" else ledger.records)[day] = json.loads(entry)
        stored = dict(self._db.execute("SELECT asset, storage_id FROM watermarks"))
        ledger.after = {asset: min(stored[asset], cursor_after.get(asset, 0)) for asset in stored}
        return ledger

    def save(self, ledger: ExportLedger) -> None:
        """The whole ledger in place of the stored one (a row per day and asset)."""
        rows = [("sft_jsonl", day, json.dumps(entry)) for day, entry in ledger.jsonl.items()]
        rows += [("sft_records", day, json.dumps(entry)) for day, entry in ledger.records.items()]
        self._db.execute("DELETE FROM exports")
        self._db.insert("exports", rows)
        self._db.execute("DELETE FROM watermarks")
        self._db.insert("watermarks", ledger.after.items())

    # --- sample ids ------------------------------------------------------------------------
    def refresh_samples(self, exportable: Mapping[str, ExportedDay], jsonl_path: Callable[[str], Location]) -> list[str]:
        """Read the sample_ids of the days whose content changed since they were read; returns
        the days whose file is not (or no longer) the one the ledger names, to be read next tick."""
        known = dict(self._db.execute("SELECT day, sha256 FROM sampled"))
        unsettled = []
        for day, exported in exportable.items():
            if known.get(day) == exported.sha256:
                continue
            path = jsonl_path(day)
            ids, sha256 = jsonl_sample_ids(path) if path.is_file() else ([], "")
            if sha256 != exported.sha256:
                unsettled.append(day)
                continue
            self._db.execute("DELETE FROM samples WHERE day = ?", (day,))
            self._db.insert("samples", ((day, sample_id, 1) for sample_id in ids), ignore_conflicts=True)
            self._db.execute(
                "UPDATE samples SET new = 0 WHERE day = ? AND sample_id IN (SELECT sample_id FROM trained)", (day,)
            )
            self._db.execute("DELETE FROM sampled WHERE day = ?", (day,))
            self._db.execute(
                "INSERT INTO sampled SELECT ?, ?, count(*) FROM samples WHERE day = ? AND new = 1", (day, exported.sha256, day)
            )
        return unsettled

    def erase(self, sample_ids_by_day: Mapping[str, list[str]]) -> int:
        """Forget these samples (their requests were erased): their rows of the days read and of
        the samples trained on, the days' untrained counts recounted; returns the rows deleted."""
        db = self._db
        deleted = 0
        with db.transaction():
            for day, ids in sample_ids_by_day.items():
                deleted += db.execute(
                    f"DELETE FROM samples WHERE day = ? AND {db.in_list('sample_id')}", (day, db.values(ids))
                ).rowcount
                db.execute(
                    "UPDATE sampled SET untrained = (SELECT count(*) FROM samples WHERE day = ? AND new = 1) WHERE day = ?",
                    (day, day),
                )
            every = [sample_id for ids in sample_ids_by_day.values() for sample_id in ids]
            deleted += db.execute(f"DELETE FROM trained WHERE {db.in_list('sample_id')}", (db.values(every),)).rowcount
        return deleted

    def untrained_by_day(self) -> dict[str, int]:
        """Per day read, its samples whose sample_id was never trained on (one row per day)."""
        return dict(self._db.execute("SELECT day, untrained FROM sampled WHERE untrained > 0"))

    def mark_trained(self, sample_ids: Iterable[str]) -> None:
        """Once per successful training run: the only step that visits every untrained sample."""
        self._db.insert("trained", ((sample_id,) for sample_id in sample_ids), ignore_conflicts=True)
        self._db.execute("UPDATE samples SET new = 0 WHERE new = 1 AND sample_id IN (SELECT sample_id FROM trained)")
        self._db.execute(
            "UPDATE sampled SET untrained = (SELECT count(*) FROM samples WHERE samples.day = sampled.day AND new = 1) "
            "WHERE untrained > 0"
        )


class _Sample(msgspec.Struct):  # a JSONL record: only its sample_id is decoded
    sample_id: str


_SAMPLE = msgspec.json.Decoder(_Sample)


def jsonl_sample_ids(path: Location) -> tuple[list[str], str]:
    """The sample_ids of a JSONL file of records and the file's sha256, in one streaming read."""
    digest = hashlib.sha256()
    ids = []
    with open_lines(path) as handle:
        for line in handle:
            digest.update(line)
            if line.strip():
                ids.append(_SAMPLE.decode(line).sample_id)
    return ids, digest.hexdigest()


def trained_sample_ids(versions_dir: Location, dataset_hash: str) -> Iterator[str]:
    """The sample_ids a training run saw: those of the dataset version it froze (immutable files)."""
    versions = DatasetVersions(versions_dir)
    name = versions.find(dataset_hash)
    if name is None:
        raise FileNotFoundError(
            f"no dataset version with hash {dataset_hash[:12]} under {versions_dir}, though a run trained on it: "
            "its samples cannot be marked as trained (was the version removed?)"
        )
    for entry in versions.manifest(name)["days"]:
        yield from jsonl_sample_ids(versions.root / name / entry["file"])[0]
