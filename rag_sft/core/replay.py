"""The replay set (docs/spec.md, "Rule 17: Judged as served";
docs/model-gate.md, "The replay set: the failures it was trained for"): failures set aside from
training so that each candidate must show it fixes the kind of failure it was trained for.

A share of the questions, chosen by a hash of the normalized question (the near-duplicate
rule's `normalized`: retyped variants fall together), never enters a training dataset, in any
version; their records join the replay set, which grows with each training dataset (the
previous set, then the new records, by sample_id), bounded to the most recent `max_size`.
A replayed failure is *fixed* by a model when the judge gives its answer none of the failure's
label.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

import pyarrow as pa

from rag_sft.core.near_duplicates import normalized

_SALT = b"replay\0"  # independent of the eval split's hash


def is_replay(question: str, share: float) -> bool:
    """Whether a question (and all its retyped variants) belongs to the replay set."""
    group = normalized(pa.array([question]))[0].as_py()
    digest = hashlib.sha256(_SALT + group.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < share


def grown(previous: Iterable[dict], new: Iterable[dict], max_size: int) -> list[dict]:
    """The previous replay set then the new records (a sample_id once, its latest record), the
    most recent `max_size` kept: an old failure stays replayed until newer ones push it out."""
    by_id: dict[str, dict] = {}
    for record in [*previous, *new]:
        by_id.pop(record["sample_id"], None)
        by_id[record["sample_id"]] = record
    return list(by_id.values())[-max_size:] if max_size > 0 else []


def still_failing(labels: Sequence[str], verdicts: Sequence) -> list[bool | None]:
    """Per replayed failure: whether the model's answer still has the failure's label (None:
    the judge failed)."""
    return [None if verdict is None else label in verdict.labels for label, verdict in zip(labels, verdicts)]
