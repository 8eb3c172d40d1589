"""What a training run sees: the deterministic train/eval split and the dataset's identity."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping


def eval_fraction(question: str) -> float:
    """A stable number in [0, 1) from the question text alone (the same on every machine)."""
    digest = hashlib.sha256(question.strip().encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def is_eval(question: str, eval_share: float) -> bool:
    """Eval or train, by a hash of the question: the same question is always on the same side."""
    return eval_fraction(question) < eval_share


def dataset_hash(day_hashes: Mapping[str, str]) -> str:
    """The identity of a set of daily files: their days and content hashes, order-free."""
    text = "\n".join(f"{day} {sha}" for day, sha in sorted(day_hashes.items()))
    return hashlib.sha256(text.encode()).hexdigest()
