"""Names that become paths (days, dataset and model versions, dataset hashes), checked before
they are joined to a folder: a value from run config or the command line cannot leave it
(`..`, absolute paths, separators, NUL bytes all fail the shape)."""

from __future__ import annotations

import re
from datetime import date
from typing import Any

DATASET_VERSION = re.compile(r"v([0-9]{3,})")  # v001, v002, ... (core/versions.py numbers them)
MODEL_VERSION = re.compile(r"v([0-9]{4,})")  # v0001, v0002, ... (the model registry numbers them)
_DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_SHA256 = re.compile(r"[0-9a-f]{64}")


def day_name(value: Any) -> str:
    """A UTC day as YYYY-MM-DD (a partition key, a `date=` folder)."""
    _require_shape(_DAY, value, "day", "a date written YYYY-MM-DD")
    try:
        date.fromisoformat(value)
    except ValueError:
        raise ValueError(f"day {value!r} is not a calendar date") from None
    return value


def dataset_version_name(value: Any) -> str:
    """A dataset version's folder name: v001, v002, ..."""
    return _require_shape(DATASET_VERSION, value, "dataset version", "v followed by at least 3 digits (v001)")


def model_version_name(value: Any) -> str:
    """A model version's folder name: v0001, v0002, ..."""
    return _require_shape(MODEL_VERSION, value, "model version", "v followed by at least 4 digits (v0001)")


def dataset_hash_name(value: Any) -> str:
    """A sha256 in lower-case hex: a dataset's content hash, or a day's file hash."""
    return _require_shape(_SHA256, value, "dataset hash", "a sha256 written as 64 lower-case hex digits")


def _require_shape(shape: re.Pattern, value: Any, what: str, expected: str) -> str:
    if not isinstance(value, str) or not shape.fullmatch(value):
        raise ValueError(f"{what} {value!r} is not {expected}")
    return value
