"""One sample per question (docs/spec.md, "Rule 13: One sample per question"): near-identical questions grouped by
MinHash LSH.

A sample's set is the character n-grams of its question once normalized (`normalized`: NFKC,
lower case, no spaces or punctuation; n = 3, so Chinese works without word segmentation).
Its documents take no part: a question retyped (case, full-width marks, spacing) is the same
question whichever documents the service fetched for it that time, and is trained on once; two
different questions are never merged because they were answered from the same documents (as
ids among a short question's grams, three shared ids made "退款多久到账" and "发票怎么开具" 0.91
alike). Two samples are near-duplicates when the MinHash estimate of the Jaccard similarity of
their sets reaches the threshold (default 0.8); LSH bands (the banding `datasketch` chooses for
the threshold) find the candidates, each confirmed on its signature.

Signatures are computed column-wise with numpy: one 64-bit hash per n-gram, then per
permutation the multiply-shift hash `(a * h + b) mod 2^64 >> 32` (a odd, a universal family),
the minimum per sample. (`datasketch.MinHash` objects cost a Python call per sample and per
insertion: about a minute for a 200,000-sample day on this machine; numpy takes seconds.)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from rag_sft.core import rules
from rag_sft.core.balance import selection_rank

NGRAM = 3
DEFAULT_THRESHOLD = 0.8
NUM_PERM = 64  # estimate's standard error about 0.05 at J = 0.8; half the cost of 128
_SEED = 20261119
# What a signature is made of, mixed into every band key: keys stored under another scheme (the
# question and its documents' ids, before) never match, so an earlier day indexed that way is
# compared with nothing until it is materialized again (see docs/near-duplicates.md,
# "Signatures made before the documents were left out").
SIGNATURE_SCHEME = 2
_PERMUTATION_CHUNK = 16  # permutations hashed at once: bounds the n-grams x permutations matrix


@dataclass(frozen=True)
class Banding:
    bands: int
    rows: int

    @classmethod
    def for_threshold(cls, threshold: float, num_perm: int = NUM_PERM) -> Banding:
        """datasketch's banding for the threshold (`MinHashLSH`'s optimal parameters, false
        positives and negatives weighed equally): the (bands, rows) with the least probability
        mass of both. Computed here because importing datasketch's LSH imports scipy (1.2 s a
        run); the integrands are polynomials of degree at most `num_perm`, which Gauss-Legendre
        quadrature with `num_perm // 2 + 1` nodes integrates exactly (tested against datasketch)."""
        nodes, weights = np.polynomial.legendre.leggauss(num_perm // 2 + 1)

        def integral(function, low: float, high: float) -> float:
            half = (high - low) / 2
            return half * float(np.sum(weights * function(half * nodes + (high + low) / 2)))

        best, least_error = (0, 0), float("inf")
        for bands in range(1, num_perm + 1):
            for rows in range(1, num_perm // bands + 1):
                false_positive = integral(lambda s: 1 - (1 - s**rows) ** bands, 0.0, threshold)
                false_negative = integral(lambda s: (1 - s**rows) ** bands, threshold, 1.0)
                if false_positive + false_negative < least_error:
                    best, least_error = (bands, rows), false_positive + false_negative
        return cls(*best)


def _permutations(num_perm: int) -> tuple[np.ndarray, np.ndarray]:
    generator = np.random.default_rng(_SEED)
    a = generator.integers(0, 2**63, size=num_perm, dtype=np.uint64) * np.uint64(2) + np.uint64(1)  # odd
    b = generator.integers(0, 2**63, size=num_perm, dtype=np.uint64)
    return a, b


def _mix(values: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer: spreads codepoint polynomials over all 64 bits."""
    with np.errstate(over="ignore"):
        values = (values ^ (values >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        values = (values ^ (values >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return values ^ (values >> np.uint64(31))


def _gram_hashes(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Each text's character n-grams as 64-bit hashes, and the text each belongs to. A text is
    padded with NULs, so one shorter than n (even an empty one) still has a gram."""
    pad = "\0" * NGRAM
    codepoints = np.frombuffer("".join(text + pad for text in texts).encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
    sizes = np.fromiter((len(text) for text in texts), dtype=np.int64, count=len(texts))
    starts = np.concatenate([[0], np.cumsum(sizes + NGRAM)[:-1]]).astype(np.int64)
    lengths = np.maximum(sizes, 1)  # grams per text
    owner = np.repeat(np.arange(len(texts)), lengths)
    positions = (np.arange(int(lengths.sum())) - np.repeat(np.cumsum(lengths) - lengths, lengths)) + starts[owner]
    with np.errstate(over="ignore"):
        grams = np.zeros(len(positions), dtype=np.uint64)
        for offset in range(NGRAM):
            grams = grams * np.uint64(0x100000001B3) + codepoints[positions + offset]
        return _mix(grams), owner


def signatures(questions: list[str], num_perm: int = NUM_PERM) -> np.ndarray:
    """The MinHash signature (uint32, `num_perm` values) of each (normalized) question's grams."""
    count = len(questions)
    if count == 0:
        return np.zeros((0, num_perm), dtype=np.uint32)
    grams, owner = _gram_hashes(questions)  # in question order: each question's grams together
    starts = np.searchsorted(owner, np.arange(count))  # every question has a gram, if only of NULs
    a, b = _permutations(num_perm)
    result = np.empty((count, num_perm), dtype=np.uint32)
    with np.errstate(over="ignore"):
        for first in range(0, num_perm, _PERMUTATION_CHUNK):
            chunk = slice(first, first + _PERMUTATION_CHUNK)
            hashed = (a[chunk, None] * grams[None, :] + b[chunk, None]) >> np.uint64(32)  # (permutations, grams)
            result[:, chunk] = np.minimum.reduceat(hashed, starts, axis=1).T
    return result


def question_keys(questions: pa.Array) -> pa.Array:
    """What a question is compared by: `normalized`, or the question itself where nothing is left
    ("？？？" and "!!" are not one question for having no words)."""
    folded = normalized(questions)
    return pc.if_else(pc.equal(folded, ""), questions, folded)


def normalized(questions: pa.Array) -> pa.Array:
    """What a retyped question keeps: NFKC (full-width marks and letters as half-width), lower
    case, no spaces or punctuation ("Spring Boot 怎么配置？" and "spring boot怎么配置?" are one)."""
    folded = pc.utf8_lower(pc.utf8_normalize(questions, "NFKC"))
    return pc.replace_substring_regex(folded, r"[\s\p{P}]+", "")


# What a sample's signature is made of: `batch_signatures` reads these columns of annotated_samples.
SIGNATURE_COLUMNS = ["sample_id", "question", "confidence"]


def batch_signatures(batch: pa.RecordBatch, min_confidence: float, chunk_rows: int = 4096) -> tuple[list[str], np.ndarray]:
    """The sample_ids and signatures of a batch's samples that pass the confidence filter; the
    batch holds `sample_id`, `question` and `confidence`."""
    batch = batch.filter(pc.greater_equal(batch.column("confidence"), min_confidence))
    sample_ids: list[str] = batch.column("sample_id").to_pylist()
    parts = [np.zeros((0, NUM_PERM), dtype=np.uint32)]
    for start in range(0, batch.num_rows, chunk_rows):  # bounds the grams x permutations matrix
        chunk = batch.slice(start, chunk_rows)
        parts.append(signatures(question_keys(chunk.column("question")).to_pylist()))
    return sample_ids, np.concatenate(parts)


def similarity(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """The Jaccard similarity estimated from signatures (row by row)."""
    return (left == right).mean(axis=-1)


def band_keys(signature: np.ndarray, banding: Banding) -> np.ndarray:
    """(samples, bands) int64 keys: equal keys in a band mean equal signature values there; the
    band's number is mixed in, so one key column serves all bands."""
    rows = signature[:, : banding.bands * banding.rows].astype(np.uint64).reshape(len(signature), banding.bands, banding.rows)
    with np.errstate(over="ignore"):
        keys = np.zeros((len(signature), banding.bands), dtype=np.uint64)
        for row in range(banding.rows):
            keys = _mix(keys * np.uint64(0x100000001B3) + rows[:, :, row])
        keys = _mix(keys + np.arange(banding.bands, dtype=np.uint64)[None, :] + np.uint64(SIGNATURE_SCHEME << 32))
    return keys.view(np.int64)


def shared_buckets(signature: np.ndarray, banding: Banding) -> list[np.ndarray]:
    """The candidates: for each band, the rows of every band key shared by more than one signature."""
    count = len(signature)
    keys = band_keys(signature, banding)
    buckets = []
    for band in range(banding.bands):
        order = np.argsort(keys[:, band], kind="stable")
        sorted_keys = keys[order, band]
        starts = np.flatnonzero(np.concatenate([[True], sorted_keys[1:] != sorted_keys[:-1]]))
        sizes = np.diff(np.concatenate([starts, [count]]))
        buckets.extend(order[start : start + size] for start, size in zip(starts[sizes > 1], sizes[sizes > 1]))
    return buckets


def groups(signature: np.ndarray, sample_ids: list[str], banding: Banding, threshold: float) -> np.ndarray:
    """For each sample, the index of the sample kept for its group (itself when it is kept).

    Candidates share a band key; a candidate joins the group of its bucket's best-ranked member
    when their estimated similarity reaches the threshold. The kept sample of a group is its
    best-ranked member (lowest `selection_rank` of its sample_id), so the choice does not
    depend on row order.
    """
    count = len(signature)
    parent = np.arange(count)
    if count < 2:
        return parent
    buckets = shared_buckets(signature, banding)
    # Ranks only for the samples that share a bucket (most samples of a day share none).
    rank = {int(index): selection_rank(sample_ids[index]) for members in buckets for index in members}

    def root(index: int) -> int:
        while parent[index] != index:
            parent[index] = parent[parent[index]]
            index = parent[index]
        return index

    for members in buckets:
        members = sorted(members.tolist(), key=rank.__getitem__)
        head, others = members[0], np.array(members[1:])
        for member in others[similarity(signature[others], signature[head]) >= threshold]:
            a, b = root(head), root(int(member))
            if a != b:  # the better-ranked root leads the merged group
                keep, other = (a, b) if rank[a] < rank[b] else (b, a)
                parent[other] = keep
    for index in rank:
        parent[index] = root(index)
    return parent


@dataclass(frozen=True)
class EarlierSamples:
    """Samples kept on earlier days that share a band key with the day, as the cross-day index
    returns them: the (band key, sample) pairs, and each sample once."""

    keys: np.ndarray  # int64 band key of each pair
    samples: np.ndarray  # the sample of each pair: an index into the lists below
    days: list[str]
    sample_ids: list[str]
    signatures: np.ndarray  # (samples, permutations) uint32

    @classmethod
    def none(cls, num_perm: int = NUM_PERM) -> EarlierSamples:
        empty = np.zeros(0, dtype=np.int64)
        return cls(empty, empty, [], [], np.zeros((0, num_perm), dtype=np.uint32))


@dataclass
class DayDeduplication:
    set_aside: pa.Table  # sample_id, filter_reason (near_duplicate), duplicate_of
    sample_ids: list[str]
    kept: np.ndarray  # indices of the samples kept (to be indexed for later days)
    signatures: np.ndarray
    keys: np.ndarray
    within_day: int = 0  # samples grouped with another of the same day
    across_days: int = 0  # samples grouped with one kept on an earlier day


def _earlier_matches(signature: np.ndarray, keys: np.ndarray, found: EarlierSamples, threshold: float) -> dict[int, str]:
    """For each sample close to one kept on an earlier day, that sample: the earliest day's,
    then the best-ranked. Column-wise: every (sample, earlier row) pair sharing a band key."""
    if not len(found.keys):
        return {}
    order = np.argsort(found.keys, kind="stable")
    sorted_keys = found.keys[order]
    flat = keys.ravel()
    low, high = np.searchsorted(sorted_keys, flat, "left"), np.searchsorted(sorted_keys, flat, "right")
    hits = high - low
    pair_sample = np.repeat(np.repeat(np.arange(len(keys)), keys.shape[1]), hits)
    pair_row = order[np.repeat(low, hits) + np.arange(int(hits.sum())) - np.repeat(np.cumsum(hits) - hits, hits)]
    # Each (sample, earlier sample) once, however many bands they share.
    pairs = np.unique(np.stack([pair_sample, found.samples[pair_row]], axis=1), axis=0)
    close = np.zeros(len(pairs), dtype=bool)
    for start in range(0, len(pairs), 65536):  # bounds the compared signatures in memory
        part = pairs[start : start + 65536]
        close[start : start + 65536] = similarity(signature[part[:, 0]], found.signatures[part[:, 1]]) >= threshold
    pairs = pairs[close]
    if not len(pairs):
        return {}
    # The earliest day's, then the best-ranked: sort the pairs by sample, day, rank; keep each first.
    earlier_rows = np.unique(pairs[:, 1])
    rank = np.empty(len(found.sample_ids), dtype=object)
    rank[earlier_rows] = [selection_rank(found.sample_ids[row]) for row in earlier_rows]
    days = np.array(found.days)
    chosen = sorted(zip(pairs[:, 0].tolist(), days[pairs[:, 1]].tolist(), rank[pairs[:, 1]].tolist(), pairs[:, 1].tolist()))
    best: dict[int, str] = {}
    for sample, _, _, row in chosen:
        best.setdefault(sample, found.sample_ids[row])
    return best


def deduplicate_day(
    sample_ids: list[str],
    signature: np.ndarray,
    earlier: Callable[[np.ndarray], EarlierSamples],
    banding: Banding,
    threshold: float,
) -> DayDeduplication:
    """Which of a day's samples are near-duplicates, and of which sample.

    First seen = earliest day: a sample close to one kept on an earlier day (`earlier` looks
    the day's band keys up) is a duplicate of it (the earliest day's, then the best-ranked); the
    others are grouped among themselves and each group keeps its best-ranked member.
    """
    count = len(sample_ids)
    keys = band_keys(signature, banding)
    matches = _earlier_matches(signature, keys, earlier(keys), threshold) if count else {}
    rest = np.array([index for index in range(count) if index not in matches], dtype=np.int64)
    kept_of = np.arange(count)
    if len(rest):
        grouped = groups(signature[rest], [sample_ids[i] for i in rest], banding, threshold)
        kept_of[rest] = rest[grouped]
    duplicate_ids = [None] * count
    for index, sample_id in matches.items():
        duplicate_ids[index] = sample_id
    for index in rest:
        if kept_of[index] != index:
            duplicate_ids[index] = sample_ids[kept_of[index]]
    aside = [index for index in range(count) if duplicate_ids[index] is not None]
    set_aside = pa.table(
        {
            "sample_id": pa.array([sample_ids[i] for i in aside], pa.string()),
            "filter_reason": pa.array([rules.NEAR_DUPLICATE] * len(aside), pa.string()),
            "duplicate_of": pa.array([duplicate_ids[i] for i in aside], pa.string()),
        }
    )
    kept = np.array([index for index in rest if kept_of[index] == index], dtype=np.int64)
    return DayDeduplication(set_aside, sample_ids, kept, signature, keys, len(aside) - len(matches), len(matches))



def differing_suggestions(set_aside: pa.Table, suggestions: dict[str, str]) -> list[tuple[str, str]]:
    """(kept, near-duplicate) sample_id pairs whose evaluator suggestions differ once normalized
    as questions are: the group's members disagreed on the correct answer and the dedup kept one.
    `suggestions` holds the day's samples; a pair whose kept sample is of an earlier day is not
    judged (that day's suggestions are not read again)."""
    ids = set_aside.column("sample_id").to_pylist()
    kept = set_aside.column("duplicate_of").to_pylist()
    folded = dict(zip(suggestions, normalized(pa.array(list(suggestions.values()), pa.string())).to_pylist()))
    return sorted(
        (head, member)
        for member, head in zip(ids, kept)
        if head in folded and member in folded and folded[head] != folded[member]
    )
