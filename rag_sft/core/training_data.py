"""What a training run sees: the train/eval split of a window, its label caps, and the
dataset's identity.

The split is by question group, not by record: a group is every record whose normalized
question (`near_duplicates.normalized`: NFKC, lower case, no spaces or punctuation) is the same
or a near-duplicate of another's (MinHash on the question alone, at the near-duplicate
threshold), so no retyped variant of a held-out question is trained on (docs/spec.md, "Rule 17: Judged as served"). The
eval groups are drawn from every (day, label) stratum of the window in proportion, by a hash of
the group's question; each gives one record (its best-ranked), and eval.jsonl is ordered so that
any prefix (the A/B table's `eval_questions`) is stratified too. Nothing depends on row order.
"""

from __future__ import annotations

import hashlib
import itertools
import math
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import pyarrow as pa

from rag_sft.core import balance, near_duplicates
from rag_sft.core.checks import ERROR, Verdict
from rag_sft.core.rules import RuleSettings
from rag_sft.core.samples import label_weights_for

EVAL_LEAKAGE = "eval_leakage"
LEAK_EXAMPLES = 5


@dataclass(frozen=True)
class WindowRecord:
    """What the split reads of a record of the window."""

    sample_id: str
    question: str
    label: str
    day: str


@dataclass
class Split:
    """Indexes into the window's records."""

    train: list[int] = field(default_factory=list)  # in window order, after the label caps
    eval: list[int] = field(default_factory=list)  # one per eval group, in stratified order
    held_out_variants: list[int] = field(default_factory=list)  # eval groups' other records: neither trained on nor judged
    label_capped: list[int] = field(default_factory=list)  # train records over their label's cap (reason label_cap)
    caps: str = "nothing to cap"  # what the caps did (`balance.summary`)
    question_groups: int = 0


def question_keys(questions: Sequence[str]) -> list[str]:
    """Each question as near-duplicate detection sees it (one home: `near_duplicates.question_keys`)."""
    return near_duplicates.question_keys(pa.array(list(questions), pa.string())).to_pylist()


def similar_questions(keys: Sequence[str], threshold: float) -> set[tuple[str, str]]:
    """Pairs (a < b) of distinct normalized questions whose MinHash similarity, on the question
    alone, reaches `threshold`: every candidate pair of an LSH bucket is confirmed."""
    distinct = sorted(set(keys))
    if len(distinct) < 2:
        return set()
    signature = near_duplicates.signatures(distinct)
    banding = near_duplicates.Banding.for_threshold(threshold)
    pairs: set[tuple[str, str]] = set()
    for members in near_duplicates.shared_buckets(signature, banding):
        for left, right in itertools.combinations(members.tolist(), 2):
            pair = (distinct[min(left, right)], distinct[max(left, right)])
            if pair not in pairs and near_duplicates.similarity(signature[left], signature[right]) >= threshold:
                pairs.add(pair)
    return pairs


def question_groups(keys: Sequence[str], threshold: float) -> dict[str, str]:
    """Each normalized question's group: the smallest question of its near-duplicate component."""
    parent = {key: key for key in keys}

    def root(key: str) -> str:
        while parent[key] != key:
            parent[key] = parent[parent[key]]
            key = parent[key]
        return key

    for left, right in similar_questions(keys, threshold):
        a, b = root(left), root(right)
        if a != b:
            parent[max(a, b)] = min(a, b)
    return {key: root(key) for key in parent}


def _quotas(stratum_sizes: Mapping[tuple[str, str], int], total: int) -> dict[tuple[str, str], int]:
    """`total` spread over the strata in proportion to their sizes (largest remainder; ties by stratum)."""
    groups = sum(stratum_sizes.values())
    exact = {stratum: total * size / groups for stratum, size in stratum_sizes.items()}
    quotas = {stratum: math.floor(value) for stratum, value in exact.items()}
    by_remainder = sorted(exact, key=lambda stratum: (-(exact[stratum] - quotas[stratum]), stratum))
    for stratum in by_remainder[: total - sum(quotas.values())]:
        quotas[stratum] += 1
    return quotas


def eval_group_count(groups: int, eval_share: float) -> int:
    """How many question groups are held out: eval_share of them, rounded, at least one when
    there are two groups or more (none of a single group: it must be trained on)."""
    return 0 if groups < 2 else min(groups - 1, max(1, round(eval_share * groups)))


def split_window(
    records: Sequence[WindowRecord],
    eval_share: float,
    similarity: float,
    balance_settings: balance.BalanceSettings,
    group_of_key: Mapping[str, str] | None = None,
) -> Split:
    """Train and eval of a window (module docstring), then the train split's labels capped to
    what `balance_settings` allow, by a hash of sample_id (`balance.capped_out`).
    `group_of_key`: the question groups when the caller has them (over these records or more)."""
    keys = question_keys([record.question for record in records])
    if group_of_key is None:
        group_of_key = question_groups(keys, similarity)
    members: dict[str, list[int]] = defaultdict(list)
    for index, key in enumerate(keys):
        members[group_of_key[key]].append(index)
    for indexes in members.values():
        indexes.sort(key=lambda index: balance.selection_rank(records[index].sample_id))
    strata: dict[tuple[str, str], list[str]] = defaultdict(list)  # (day, label) of the group's first record
    for group, indexes in members.items():
        strata[(records[indexes[0]].day, records[indexes[0]].label)].append(group)
    quotas = _quotas({stratum: len(groups) for stratum, groups in strata.items()}, eval_group_count(len(members), eval_share))
    ordered: list[tuple[float, tuple[bytes, str], str]] = []
    for stratum, groups in strata.items():
        chosen = sorted(groups, key=balance.selection_rank)[: quotas[stratum]]
        # Spread each stratum evenly over the order: any prefix holds every stratum in proportion.
        ordered.extend(((position + 0.5) / len(chosen), balance.selection_rank(group), group) for position, group in enumerate(chosen))
    eval_groups = [group for *_, group in sorted(ordered)]
    split = Split(question_groups=len(members))
    split.eval = [members[group][0] for group in eval_groups]
    split.held_out_variants = sorted(index for group in eval_groups for index in members[group][1:])
    held_out = set(split.eval) | set(split.held_out_variants)
    train = [index for index in range(len(records)) if index not in held_out]
    counts = Counter(records[index].label for index in train)
    caps = balance.label_caps(counts, balance_settings)
    split.caps = balance.summary(counts, caps)
    capped = balance.over_cap(counts, caps) if caps is not None else {}
    over = balance.capped_out(((records[index].sample_id, records[index].label) for index in train), capped)
    split.train = [index for index in train if records[index].sample_id not in over]
    split.label_capped = [index for index in train if records[index].sample_id in over]
    return split


def composition(records: Sequence[WindowRecord]) -> list[dict]:
    """How many records come from each day and label (for the metadata)."""
    counts = Counter((record.day, record.label) for record in records)
    return [{"day": day, "label": label, "count": count} for (day, label), count in sorted(counts.items())]


def leakage_verdict(train_questions: Sequence[str], eval_questions: Sequence[str], similarity: float) -> Verdict:
    """No eval question, or a near-duplicate of it, in the train split: the pairs of (train,
    eval) normalized questions that are equal or near-duplicates at `similarity` must be 0."""
    train_keys, eval_keys = set(question_keys(train_questions)), set(question_keys(eval_questions))
    leaks = sorted((key, key) for key in train_keys & eval_keys)
    leaks += sorted(
        (a, b) if a in train_keys else (b, a)
        for a, b in similar_questions([*train_keys, *eval_keys], similarity)
        if (a in train_keys and b in eval_keys) or (b in train_keys and a in eval_keys)
    )
    metadata = {
        "leaking_pairs": len(leaks),
        "train_questions": len(train_keys),
        "eval_questions": len(eval_keys),
        "similarity": similarity,
        "examples": [f"train {a!r} / eval {b!r}"[:300] for a, b in leaks[:LEAK_EXAMPLES]],
    }
    if leaks:
        return Verdict(
            EVAL_LEAKAGE,
            False,
            ERROR,
            f"{EVAL_LEAKAGE}: {len(leaks)} eval questions have the same normalized question or a near-duplicate "
            f"(similarity >= {similarity:g}) in the train split, e.g. {metadata['examples'][0]}",
            metadata,
        )
    return Verdict(
        EVAL_LEAKAGE,
        True,
        ERROR,
        f"{EVAL_LEAKAGE}: none of {len(eval_keys)} eval questions has a near-duplicate among {len(train_keys)} train questions",
        metadata,
    )


def dataset_hash(day_hashes: Mapping[str, str]) -> str:
    """The identity of a set of daily files: their days and content hashes, order-free."""
    text = "\n".join(f"{day} {sha}" for day, sha in sorted(day_hashes.items()))
    return hashlib.sha256(text.encode()).hexdigest()


def training_label_weights(
    train_label_counts: Mapping[str, int], settings: RuleSettings, max_label_weight: float
) -> dict[str, float]:
    """Rule 9 over the training split as it is frozen (after the label caps), capped at `max_label_weight`.

    The day's weights in the JSONL come from one day's counts: a stray label on a large day
    would weigh hundreds. Over the whole training set, and capped, no label drowns the others.
    """
    return {label: min(weight, max_label_weight) for label, weight in label_weights_for(train_label_counts, settings).items()}


_SERVED_SALT = b"served-prompt\0"


def trains_on_served_prompt(sample_id: str, share: float) -> bool:
    """Whether a train record is taught on the service's own prompt (no label hint) instead of
    its correction prompt: a deterministic `share` of the records, by a hash of sample_id, so the
    adapter learns to answer as it will be asked (docs: the model gate, "Judged as served")."""
    digest = hashlib.sha256(_SERVED_SALT + sample_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < share
