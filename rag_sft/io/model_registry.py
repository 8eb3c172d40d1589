"""Model versions on disk: `data/models/<version>/` and the registry `data/models/registry.json`.

Each version folder holds the adapter, the tokenizer, the training config, the metrics and the
dataset it trained on. The registry lists every version with its status (`candidate` while it
is evaluated, then `promoted` or `rejected` with the reason, `rolled_back` once taken out of
use) and the history of what was put in use, when and why; `data/models/current` (a symlink)
points at the promoted version in use. Every change is a read-modify-write under an exclusive
lock (`registry.lock`) ending in an atomic rename, so concurrent runs and commands never lose
each other's updates.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

CANDIDATE = "candidate"
PROMOTED = "promoted"
REJECTED = "rejected"
ROLLED_BACK = "rolled_back"
_VERSION = re.compile(r"^v(\d{4,})$")


class ModelRegistry:
    def __init__(self, root: Path):
        self.root = Path(root)
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

    def new_version_dir(self) -> tuple[str, Path]:
        """The next free version name (v0001, v0002, ...) and its folder, created."""
        self.root.mkdir(parents=True, exist_ok=True)
        taken = [int(m[1]) for p in self.root.iterdir() if (m := _VERSION.match(p.name))]
        number = max(taken, default=0) + 1
        while True:
            version = f"v{number:04d}"
            try:
                (self.root / version).mkdir()
                return version, self.root / version
            except FileExistsError:  # another run took it
                number += 1

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
        return os.readlink(self.current_link) if self.current_link.is_symlink() else None

    def _point_current_at(self, version: str) -> None:
        link = self.root / f".current-{uuid.uuid4().hex}"
        link.symlink_to(version)
        os.replace(link, self.current_link)

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
        return json.loads(self.file.read_text())

    @contextmanager
    def _changing(self) -> Iterator[dict]:
        """The registry's state, written back atomically when the block ends, under a lock."""
        self.root.mkdir(parents=True, exist_ok=True)
        with (self.root / "registry.lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            state = self._read()
            yield state
            tmp = self.file.with_name(f".{self.file.name}.{uuid.uuid4().hex}")
            tmp.write_text(json.dumps(state, indent=2, ensure_ascii=False) + "\n")
            os.replace(tmp, self.file)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
