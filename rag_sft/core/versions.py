"""Dataset versions: what a named, immutable snapshot of exportable days is made of.

A version is identified by its days and the content hash of each day's JSONL (the same
identity as a training dataset, `training_data.dataset_hash`), so asking for the same days
with the same contents again names the existing version.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import orjson

from rag_sft.core.names import DATASET_VERSION
from rag_sft.core.training_data import dataset_hash


@dataclass(frozen=True)
class DayEntry:
    day: str
    file: str  # path inside the version folder
    sha256: str
    records: int
    labels: dict[str, int]
    checks: dict[str, str]  # check name -> "passed" or "warned: <description>"
    extra_files: dict[str, str] = field(default_factory=dict)  # other published files -> sha256


def next_version_name(existing: Iterable[str]) -> str:
    numbers = [int(match[1]) for name in existing if (match := DATASET_VERSION.fullmatch(name))]
    return f"v{max(numbers, default=0) + 1:03d}"


def label_counts(jsonl: bytes) -> tuple[int, dict[str, int]]:
    """Records and records per label of a daily JSONL file."""
    labels: Counter = Counter()
    lines = 0
    for line in jsonl.splitlines():
        if line.strip():
            labels[orjson.loads(line)["label"]] += 1
            lines += 1
    return lines, dict(sorted(labels.items()))


def version_manifest(name: str, entries: Iterable[DayEntry], created: str) -> dict:
    days = sorted(entries, key=lambda entry: entry.day)
    totals: Counter = Counter()
    for entry in days:
        totals.update(entry.labels)
    return {
        "version": name,
        "hash": version_hash({entry.day: entry.sha256 for entry in days}),
        "created": created,
        "records": sum(entry.records for entry in days),
        "labels": dict(sorted(totals.items())),
        "days": [
            {
                "day": entry.day,
                "file": entry.file,
                "sha256": entry.sha256,
                "records": entry.records,
                "labels": entry.labels,
                "checks": entry.checks,
                "other_files": entry.extra_files,
            }
            for entry in days
        ],
    }


def version_hash(day_hashes: Mapping[str, str]) -> str:
    return dataset_hash(day_hashes)
