"""Balance by selection (SPEC rule 12): which samples of an over-represented label a day sets
aside so that what it exports passes the label-balance check (its caps: `checks.label_caps`).

The choice is a hash of `sample_id`, not the order rows arrive in: a re-run, a re-ordered
source or another worker count sets aside exactly the same samples.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable, Mapping

import pyarrow as pa
import pyarrow.compute as pc

from rag_sft.core import rules
from rag_sft.core.tables import SET_ASIDE

def selection_rank(sample_id: str) -> tuple[bytes, str]:
    """Where a sample stands in its label's queue: lower is kept first (the id breaks ties)."""
    return hashlib.blake2b(sample_id.encode(), digest_size=8).digest(), sample_id


def over_cap(label_counts: Mapping[str, int], caps: Mapping[str, int]) -> dict[str, int]:
    """The labels whose count exceeds their cap, with the cap."""
    return {label: caps[label] for label, count in label_counts.items() if count > caps.get(label, count)}


def label_cap_surplus(candidates: Iterable[pa.RecordBatch], caps: Mapping[str, int], min_confidence: float) -> pa.Table:
    """The samples over their label's cap (a `tables.SET_ASIDE` table, reason `label_cap`): of each
    capped label's samples that pass the confidence filter, all but the `cap` ranked first.

    `candidates` hold `sample_id`, `label` and `confidence`; only capped labels are gathered.
    """
    ids_by_label: dict[str, list[str]] = defaultdict(list)
    capped_labels = pa.array(sorted(caps), pa.string())
    for batch in candidates:
        keep = pc.and_(
            pc.greater_equal(batch.column("confidence"), min_confidence),
            pc.is_in(batch.column("label"), value_set=capped_labels),
        )
        chosen = batch.filter(keep)
        for sample_id, label in zip(chosen.column("sample_id").to_pylist(), chosen.column("label").to_pylist()):
            ids_by_label[label].append(sample_id)
    surplus = [
        sample_id
        for label, cap in sorted(caps.items())
        for sample_id in sorted(ids_by_label[label], key=selection_rank)[cap:]
    ]
    return pa.table(
        [pa.array(surplus, pa.string()), pa.array([rules.LABEL_CAP] * len(surplus), pa.string()), pa.nulls(len(surplus), pa.string())],
        schema=SET_ASIDE,
    )


def summary(label_counts: Mapping[str, int], caps: Mapping[str, int] | None) -> str:
    """What rebalancing did to a day, for its metadata."""
    if caps is None:
        return (
            "cannot balance: no subset of at least min_records_for_balance records passes label_balance "
            "(the check decides)"
        )
    capped = over_cap(label_counts, caps)
    if not capped:
        return "nothing to cap"
    return "capped " + ", ".join(f"{label} {label_counts[label]} -> {cap}" for label, cap in sorted(capped.items()))
