"""Model versions: `<data_dir>/models/<version>/` and the registry `<data_dir>/models/registry.json`.

Each version folder holds the adapter, the tokenizer, the training config, the metrics and the
dataset it trained on. The registry lists every version with its status (`candidate` while it
is evaluated, then `promoted` or `rejected` with the reason, `rolled_back` once taken out of
use) and the history of what was put in use, when and why; `models/current` (a symlink on a
disk, an object holding the name on a store) points at the promoted version in use. Every
change is a read-modify-write under an exclusive lock (`registry.lock`) ending in one atomic
replacement (a rename on a disk, one PUT on a store), so concurrent runs and commands of one
host never lose each other's updates. A version folder is published before its registry entry:
a version exists once registered, and a folder without an entry is an unfinished upload.
"""

from __future__ import annotations

import fcntl
import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

from rag_sft.io.storage.location import Location, claim_dir, ensure_dir, point, pointed, replace_bytes, spool_dir

CANDIDATE = "candidate"
PROMOTED = "promoted"
REJECTED = "rejected"
ROLLED_BACK = "rolled_back"
_VERSION = re.compile(r"^v(\d{4,})$")


class RegistryError(ValueError):
    """The registry cannot be trusted or the change asked would leave it wrong: refused, nothing written."""


class ModelRegistry:
    def __init__(self, root: Location):
        self.root = root
        self.file = self.root / "registry.json"
        self.current_link = self.root / "current"

    def versions(self) -> list[dict]:
        return self._read()["versions"]

    def history(self) -> list[dict]:
        """What was put in use or taken out of it, oldest first."""
        return self._read().get("history", [])

    def get(self, version: str) -> dict:
        for entry in self.versions():
            if entry["version"] == version:
                return entry
        raise KeyError(f"model version {version} is not registered in {self.file}")

    def new_version_dir(self) -> tuple[str, Location]:
        """The next free version name (v0001, v0002, ...) and its folder, claimed (`storage.claim_dir`)."""
        ensure_dir(self.root)
        taken = [int(m[1]) for p in self.root.iterdir() if (m := _VERSION.match(p.name))]
        number = max(taken, default=0) + 1
        while not claim_dir(self.root / f"v{number:04d}"):  # another run took it
            number += 1
        return f"v{number:04d}", self.root / f"v{number:04d}"

    def register(self, version: str, **info) -> dict:
        entry = {"version": version, "status": CANDIDATE, "created": _now(), **info}
        with self._changing() as state:
            state["versions"] = [*(e for e in state["versions"] if e["version"] != version), entry]
        return entry

    def update(self, version: str, **info) -> dict:
        with self._changing() as state:
            return self._update(state, version, info)

    def promote(self, version: str, reason: str) -> None:
        """Put `version` in use (the gate's decision, or a person's through `rag-sft model promote`)."""
        with self._changing() as state:
            self._update(state, version, {"status": PROMOTED, "reason": reason})
            state.setdefault("history", []).append(
                {"action": "promote", "version": version, "previous": self.current(), "reason": reason, "at": _now()}
            )
            self._point_current_at(version)

    def reject(self, version: str, reason: str) -> None:
        self.update(version, status=REJECTED, reason=reason)

    def rollback(self, reason: str) -> tuple[str, str | None]:
        """Take the version in use out of use and restore the one in use before it (the latest
        promoted version still promoted), or the base model when there is none. Returns (from, to)."""
        with self._changing() as state:
            current = self.current()
            if current is None:
                raise ValueError("no version is in use: nothing to roll back")
            self._update(state, current, {"status": ROLLED_BACK, "reason": reason})
            promoted = {e["version"] for e in state["versions"] if e["status"] == PROMOTED}
            previous = next(
                (h["version"] for h in reversed(state.get("history", [])) if h["action"] == "promote" and h["version"] in promoted),
                None,
            )
            state.setdefault("history", []).append(
                {"action": "rollback", "version": current, "restored": previous, "reason": reason, "at": _now()}
            )
            if previous is None:
                self.current_link.unlink()
            else:
                self._point_current_at(previous)
            return current, previous

    def current(self) -> str | None:
        return pointed(self.current_link)

    def _point_current_at(self, version: str) -> None:
        # Checked inside the change: raising there writes nothing, so `current` stays as it was.
        if not (self.root / version).is_dir():
            raise RegistryError(
                f"model version {version} has no folder at {self.root / version} (deleted or never uploaded): "
                "not put in use; restore the folder first"
            )
        point(self.current_link, version)

    @staticmethod
    def _update(state: dict, version: str, info: dict) -> dict:
        for entry in state["versions"]:
            if entry["version"] == version:
                entry.update(info, updated=_now())
                return entry
        raise KeyError(f"model version {version} is not registered")

    def _read(self) -> dict:
        if not self.file.exists():
            return {"versions": [], "history": []}
        try:
            state = json.loads(self.file.read_bytes())
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise RegistryError(
                f"{self.file} is not valid JSON ({error}): restore it from a backup; nothing was changed"
            ) from None
        versions = state.get("versions") if isinstance(state, dict) else None
        if not isinstance(versions, list) or not all(
            isinstance(entry, dict) and isinstance(entry.get("version"), str) and isinstance(entry.get("status"), str)
            for entry in versions
        ):
            raise RegistryError(
                f"{self.file} holds no list of versions (each with its version and status): "
                "restore it from a backup; nothing was changed"
            )
        if not isinstance(state.get("history", []), list):
            raise RegistryError(
                f"{self.file}: its history is not a list: restore it from a backup; nothing was changed"
            )
        return state

    @contextmanager
    def _changing(self) -> Iterator[dict]:
        """The registry's state, written back atomically when the block ends, under a lock."""
        ensure_dir(self.root)
        # For a store, in this host's spool: it excludes the changes of one host only.
        lock_path = spool_dir(self.root) / "registry.lock"
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        with lock_path.open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            state = self._read()
            yield state
            replace_bytes(self.file, (json.dumps(state, indent=2, ensure_ascii=False) + "\n").encode())


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
