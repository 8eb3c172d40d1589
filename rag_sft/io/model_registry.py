"""Model versions on disk: `data/models/<version>/` and the registry `data/models/registry.json`.

Each version folder holds the adapter, the tokenizer, the training config, the metrics and the
dataset it trained on. The registry lists every version with its status (`candidate` while it
is evaluated, then `promoted` or `rejected` with the reason); `data/models/current` (a symlink)
points at the promoted version in use.
"""

from __future__ import annotations

import json
import os
import re
import uuid
from datetime import UTC, datetime
from pathlib import Path

CANDIDATE = "candidate"
PROMOTED = "promoted"
REJECTED = "rejected"
_VERSION = re.compile(r"^v(\d{4,})$")


class ModelRegistry:
    def __init__(self, root: Path):
        self.root = Path(root)
        self.file = self.root / "registry.json"
        self.current_link = self.root / "current"

    def versions(self) -> list[dict]:
        if not self.file.exists():
            return []
        return json.loads(self.file.read_text())["versions"]

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
        self._write([*(e for e in self.versions() if e["version"] != version), entry])
        return entry

    def update(self, version: str, **info) -> dict:
        entries = self.versions()
        for entry in entries:
            if entry["version"] == version:
                entry.update(info, updated=_now())
                self._write(entries)
                return entry
        raise KeyError(f"model version {version} is not registered in {self.file}")

    def promote(self, version: str, reason: str) -> None:
        self.update(version, status=PROMOTED, reason=reason)
        link = self.root / f".current-{uuid.uuid4().hex}"
        link.symlink_to(version)
        os.replace(link, self.current_link)

    def reject(self, version: str, reason: str) -> None:
        self.update(version, status=REJECTED, reason=reason)

    def current(self) -> str | None:
        return os.readlink(self.current_link) if self.current_link.is_symlink() else None

    def _write(self, entries: list[dict]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.file.with_name(f".{self.file.name}.{uuid.uuid4().hex}")
        tmp.write_text(json.dumps({"versions": entries}, indent=2, ensure_ascii=False) + "\n")
        os.replace(tmp, self.file)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
