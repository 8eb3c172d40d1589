"""Dataset versions: `<data_dir>/datasets/versions/<vNNN>/`, immutable once written.

A version folder holds each day's published files (`date=<day>/records.jsonl`, and the
preference pairs and trainer exports beside it) and `manifest.json`. On a disk the files are
hard links to the day's files when the disk allows (a re-materialized day replaces its files by
rename, so the version keeps the bytes it was made of) and copies otherwise; a version is built
in a hidden folder and renamed into place, under a lock, so two runs cannot write the same name.
On an object store the version is built in the local spool and uploaded, its manifest last: a
version exists once its manifest does, and a prefix without one (an interrupted upload) is
ignored, then overwritten by the next version made (`storage.publish_folder`). Only an erasure
rewrites a version, under its name (`erase`): on a disk swapped whole, on a store file by file,
its manifest last.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import shutil
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from rag_sft.core.versions import DayEntry, label_counts, next_version_name, version_hash, version_manifest
from rag_sft.io.storage.location import Location, copy_in, ensure_dir, publish_folder, replace_files, spool_dir

MANIFEST = "manifest.json"
RECORDS = "records.jsonl"


class VersionConflict(Exception):
    """A day's file is not the one the version was asked for (changed or missing since)."""


class DatasetVersions:
    def __init__(self, root: Location):
        self.root = root

    def names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if (p / MANIFEST).is_file())

    def manifest(self, name: str) -> dict:
        path = self.root / name / MANIFEST
        if not path.is_file():
            known = ", ".join(self.names()) or "none yet"
            raise KeyError(f"no dataset version {name!r} under {self.root} (versions: {known})")
        return json.loads(path.read_bytes())

    def latest(self) -> str | None:
        names = self.names()
        return names[-1] if names else None

    def find(self, content_hash: str) -> str | None:
        return next((name for name in self.names() if self.manifest(name)["hash"] == content_hash), None)

    def create(
        self, days: Mapping[str, str], export_dir: Callable[[str], Location], checks: Mapping[str, dict] | None = None
    ) -> tuple[str, bool]:
        """The version of these days (day -> sha256 of its JSONL): (name, True) when made now,
        (name, False) when a version with the same days and contents exists."""
        if not days:
            raise ValueError("a dataset version needs at least one day")
        ensure_dir(self.root)
        with self._lock():
            existing = self.find(version_hash(days))
            if existing:
                return existing, False
            name = next_version_name(self.names())
            staging = spool_dir(self.root) / f".{name}.tmp-{uuid.uuid4().hex}"
            try:
                entries = [
                    self._copy_day(day, sha256, export_dir(day), staging, (checks or {}).get(day, {}))
                    for day, sha256 in sorted(days.items())
                ]
                manifest = version_manifest(name, entries, datetime.now(UTC).isoformat(timespec="seconds"))
                (staging / MANIFEST).write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
                publish_folder(staging, self.root / name, last=MANIFEST)
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
            return name, True

    def _copy_day(self, day: str, sha256: str, source: Location, staging: Path, checks: dict) -> DayEntry:
        target = staging / f"date={day}"
        target.mkdir(parents=True)
        files = sorted(p for p in source.iterdir() if p.is_file() and not p.name.startswith(".")) if source.is_dir() else []
        if RECORDS not in {p.name for p in files}:
            raise VersionConflict(f"{source / RECORDS} is missing: the day is not exported (held back or not materialized)")
        for path in files:
            copy_in(path, target / path.name)
        entry = _day_entry(day, _files(target), checks)
        if entry.sha256 != sha256:
            raise VersionConflict(
                f"{source / RECORDS} has sha256 {entry.sha256[:12]}, not {sha256[:12]}: the day was re-materialized since it "
                "was chosen; ask again for the current days"
            )
        return entry

    def erase(self, name: str, erase_day: Callable[[Location, Path], int], note: dict) -> dict | None:
        """Rewrite version `name` without erased records: `erase_day(day folder, into)` writes the
        day's files it changes into the local folder `into` and returns the records it removed.
        When any were, the changed files replace the version's under its name (`storage.replace_files`:
        on a disk the folder swapped whole, the old files deleted, a file still linked from a day's
        export keeping its bytes there until that day is erased too; on a store each file replaced,
        then the manifest), its new manifest listing the erasure (`note`, the previous hash, the
        records removed). Returns the new manifest, or None when the version held none of them."""
        with self._lock():
            old = self.manifest(name)
            folder = self.root / name
            changes = spool_dir(self.root) / f".{name}.erasing-{uuid.uuid4().hex}"
            try:
                removed = 0
                for entry in old["days"]:
                    (changes / f"date={entry['day']}").mkdir(parents=True)
                    removed += erase_day(folder / f"date={entry['day']}", changes / f"date={entry['day']}")
                if not removed:
                    shutil.rmtree(changes)
                    return None
                entries = [_erased_day_entry(entry, folder, changes) for entry in old["days"]]
                manifest = version_manifest(name, entries, old["created"])
                erasure = {**note, "previous_hash": old["hash"], "records_removed": removed}
                manifest["erasures"] = [*old.get("erasures", []), erasure]
                (changes / MANIFEST).write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
                # Each day's records file after the files that follow it, so that an erasure stopped
                # in between finds the records again (`erase_record_files`); the manifest last.
                replace_files(folder, changes, last=[*(entry["file"] for entry in old["days"]), MANIFEST])
            except BaseException:
                shutil.rmtree(changes, ignore_errors=True)
                raise
            return manifest

    @contextmanager
    def _lock(self) -> Iterator[None]:
        # Beside the versions folder, not in it: that folder holds versions only (DVC tracks it).
        # For a store, in this host's spool: it excludes the runs of one host only.
        lock = spool_dir(self.root.parent) / ".versions.lock"
        lock.parent.mkdir(parents=True, exist_ok=True)
        with lock.open("w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)


def _day_entry(day: str, files: Mapping[str, Location], checks: dict) -> DayEntry:
    """A day of a version as its files (name -> file) hold it: the records' hash and counts, the other files' hashes."""
    data = files[RECORDS].read_bytes()
    records, labels = label_counts(data)
    others = {name: hashlib.sha256(files[name].read_bytes()).hexdigest() for name in sorted(files) if name != RECORDS}
    return DayEntry(day, f"date={day}/{RECORDS}", hashlib.sha256(data).hexdigest(), records, labels, dict(checks), others)


def _erased_day_entry(entry: dict, folder: Location, changes: Path) -> DayEntry:
    """A day of a version after an erasure: as its manifest has it when none of its files changed,
    else read from the changed files and the version's others."""
    day = f"date={entry['day']}"
    changed = _files(changes / day)
    if not changed:
        return DayEntry(entry["day"], entry["file"], entry["sha256"], entry["records"], entry["labels"],
                        entry["checks"], entry["other_files"])  # fmt: skip
    return _day_entry(entry["day"], {**_files(folder / day), **changed}, entry["checks"])


def _files(folder: Location) -> dict[str, Location]:
    return {path.name: path for path in folder.iterdir() if path.is_file() and not path.name.startswith(".")}

