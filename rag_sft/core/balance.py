"""Balance where the model is shaped (docs/spec.md, "Rule 12: Balance"): a version's training set caps a dominant
label's surplus by selection over its whole window, and its `train_label_balance` check holds
what it trains on to `max_label_share` and `max_imbalance_ratio`. A day is never capped: its
label mix is a monitor (`checks.label_mix_verdict`).

Which samples a capped label keeps is a hash of `sample_id`, not the order rows arrive in: a
re-run, a re-ordered window or another worker count keeps exactly the same samples.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from rag_sft.core.checks import ERROR, Verdict

TRAIN_LABEL_BALANCE = "train_label_balance"


@dataclass(frozen=True)
class BalanceSettings:
    max_label_share: float = 0.6
    max_imbalance_ratio: float = 10.0
    min_records_for_balance: int = 50  # smaller training sets are not judged
    min_label_count: int = 5  # rarer labels are reported, not held against the imbalance ratio


def selection_rank(sample_id: str) -> tuple[bytes, str]:
    """Where a sample stands in its label's queue: lower is kept first (the id breaks ties)."""
    return hashlib.blake2b(sample_id.encode(), digest_size=8).digest(), sample_id


def over_cap(label_counts: Mapping[str, int], caps: Mapping[str, int]) -> dict[str, int]:
    """The labels whose count exceeds their cap, with the cap."""
    return {label: caps[label] for label, count in label_counts.items() if count > caps.get(label, count)}


def _share_passes(top_count: int, total: int, settings: BalanceSettings) -> bool:
    return top_count / total <= settings.max_label_share


def _ratio_passes(top_count: int, rare_count: int, settings: BalanceSettings) -> bool:
    return top_count / rare_count <= settings.max_imbalance_ratio


def _ratio_judged(counts: Mapping[str, int], settings: BalanceSettings) -> dict[str, int]:
    """The labels the imbalance ratio is judged on: a handful of stray records of a label must
    not cap everything else (300 times a label seen once)."""
    return {label: count for label, count in counts.items() if count >= settings.min_label_count}


def label_caps(label_counts: Mapping[str, int], settings: BalanceSettings) -> dict[str, int] | None:
    """The most records of each label a training set may keep and pass `balance_verdict`: the
    dominant labels are cut down to a common cap (and to max_imbalance_ratio times the rarest
    judged label). The counts themselves when the set passes or is too small to judge; None when
    no subset of at least min_records_for_balance records passes (nothing is capped, the check fails)."""
    counts = {label: count for label, count in label_counts.items() if count > 0}
    total = sum(counts.values())
    if total < settings.min_records_for_balance or balance_verdict(counts, {}, settings).passed:
        return counts
    judged = _ratio_judged(counts, settings)
    ratio_cap = math.floor(settings.max_imbalance_ratio * min(judged.values())) if judged else total
    capped = [min(count, ratio_cap) for count in counts.values()]

    def share_passes_at(cap: int) -> bool:  # the labels above a common cap, cut down to it
        return _share_passes(cap, sum(min(count, cap) for count in capped), settings)

    # share(X) = X / sum(min(count, X)) only grows with X (each step adds at most one X per label
    # above it), so the common caps that pass are 1..X*: the largest is found by bisection.
    low, high = 0, max(capped)
    while low < high:
        middle = (low + high + 1) // 2
        low, high = (middle, high) if share_passes_at(middle) else (low, middle - 1)
    caps = {label: min(count, ratio_cap, low) for label, count in counts.items()}
    balanced = {label: count for label, count in caps.items() if count > 0}
    if sum(balanced.values()) < settings.min_records_for_balance or not balance_verdict(balanced, {}, settings).passed:
        return None
    return caps


def capped_out(samples: Iterable[tuple[str, str]], caps: Mapping[str, int]) -> set[str]:
    """The sample_ids over their label's cap: of each capped label's (sample_id, label) pairs,
    all but the `cap` ranked first by `selection_rank`."""
    ids_by_label: dict[str, list[str]] = {label: [] for label in caps}
    for sample_id, label in samples:
        if label in ids_by_label:
            ids_by_label[label].append(sample_id)
    return {
        sample_id
        for label, cap in caps.items()
        for sample_id in sorted(ids_by_label[label], key=selection_rank)[cap:]
    }


def summary(label_counts: Mapping[str, int], caps: Mapping[str, int] | None) -> str:
    """What the caps did to a training set, for its metadata."""
    if caps is None:
        return "cannot balance: no subset of at least min_records_for_balance records passes train_label_balance"
    capped = over_cap(label_counts, caps)
    if not capped:
        return "nothing to cap"
    return "capped " + ", ".join(f"{label} {label_counts[label]} -> {cap}" for label, cap in sorted(capped.items()))


def balance_verdict(label_counts: Mapping[str, int], label_weights: Mapping[str, float], settings: BalanceSettings) -> Verdict:
    """No label above max_label_share of the training records, and the most frequent label at
    most max_imbalance_ratio times the least frequent one with at least min_label_count records
    (rarer labels are reported); sets under min_records_for_balance are not judged."""
    counts = {label: count for label, count in Counter(label_counts).items() if count > 0}
    total = sum(counts.values())
    labels = [
        {"label": label, "count": count, "share": round(count / total, 4), "label_weight": label_weights.get(label)}
        for label, count in sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    ]
    metadata: dict = {
        "records": total,
        "labels": labels,
        "max_label_share": settings.max_label_share,
        "max_imbalance_ratio": settings.max_imbalance_ratio,
        "min_records_for_balance": settings.min_records_for_balance,
        "min_label_count": settings.min_label_count,
    }
    name = TRAIN_LABEL_BALANCE
    if total < settings.min_records_for_balance:
        return Verdict(
            name,
            True,
            ERROR,
            f"{name}: not judged, {total} training records is fewer than min_records_for_balance "
            f"{settings.min_records_for_balance} (too small to judge)",
            metadata,
        )
    top_label, top_count = max(counts.items(), key=lambda item: (item[1], item[0]))
    top_share = top_count / total
    judged = _ratio_judged(counts, settings)
    rare = {label: count for label, count in counts.items() if label not in judged}
    metadata.update(top_label=top_label, top_share=round(top_share, 4), rare_labels=dict(sorted(rare.items())))
    problems = []
    if not _share_passes(top_count, total, settings):
        problems.append(
            f"{top_label} is {top_share:.1%} of {total} training records, above max_label_share {settings.max_label_share:.0%}"
        )
    ratio_text = "imbalance ratio not judged (no label has min_label_count records)"
    if judged:
        rare_label, rare_count = min(judged.items(), key=lambda item: (item[1], item[0]))
        ratio = top_count / rare_count
        metadata.update(imbalance_ratio=round(ratio, 2))
        ratio_text = f"imbalance ratio {ratio:.1f}"
        if not _ratio_passes(top_count, rare_count, settings):
            problems.append(
                f"{top_label} ({top_count}) is {ratio:.1f} times {rare_label} ({rare_count}), "
                f"above max_imbalance_ratio {settings.max_imbalance_ratio:g}"
            )
    rare_text = ""
    if rare:
        listed = ", ".join(f"{label} ({count})" for label, count in sorted(rare.items(), key=lambda item: (item[1], item[0])))
        rare_text = f"; under min_label_count {settings.min_label_count}, not judged for the ratio: {listed}"
    if problems:
        return Verdict(name, False, ERROR, f"{name}: " + "; ".join(problems) + rare_text, metadata)
    return Verdict(
        name,
        True,
        ERROR,
        f"{name}: {len(counts)} labels over {total} records, largest {top_label} {top_share:.1%}, {ratio_text}{rare_text}",
        metadata,
    )
