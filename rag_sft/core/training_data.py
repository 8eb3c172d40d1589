"""What a training run sees: the deterministic train/eval split and the dataset's identity."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

from rag_sft.core.rules import RuleSettings
from rag_sft.core.samples import label_weights_for


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


def training_label_weights(
    train_label_counts: Mapping[str, int], settings: RuleSettings, max_label_weight: float
) -> dict[str, float]:
    """Rule 9 over the training split as it is frozen, capped at `max_label_weight`.

    The day's weights in the JSONL come from one day's counts: a stray label on a large day
    would weigh hundreds. Over the whole training set, and capped, no label drowns the others.
    """
    return {label: min(weight, max_label_weight) for label, weight in label_weights_for(train_label_counts, settings).items()}
