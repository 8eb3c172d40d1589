"""Embedding pairs (docs/spec.md, "Rule 16: Embedding pairs") from triaged samples.

A sample routed to `retrieval` or `both` becomes one query with its positives (context passages
judged relevant) and hard negatives (those judged irrelevant), in FlagEmbedding's format; one
with no positive (no passage held the answer and no knowledge base is mined) is a retrieval gap
instead. A text is never both a positive and a negative of its query. See docs/retriever.md,
"Embedding pairs".
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from rag_sft.core import checks, rules, triage

# Where a positive or negative came from (the `source` of each pair passage).
RETRIEVED = "retrieved"  # a context passage of the event, judged by `judged_by`

PAIR_DOC = pa.struct(
    [
        ("id", pa.string()),
        ("content", pa.string()),
        ("similarity", pa.float64()),  # the project's question-passage similarity (null: not measured)
        ("retrieval_score", pa.float64()),
        ("source", pa.string()),
    ]
)

EMBEDDING_PAIRS = pa.schema(
    [
        ("request_id", pa.string()),
        ("sample_id", pa.string()),
        ("query", pa.string()),
        ("language", pa.string()),
        ("route", pa.string()),
        ("judged_by", pa.string()),  # who judged the passages: evaluator or similarity
        ("pos", pa.list_(PAIR_DOC)),
        ("neg", pa.list_(PAIR_DOC)),
        ("query_length", pa.int64()),  # characters (Chinese) or words (English)
        ("flags", pa.list_(pa.string())),  # short_query / long_query: for review, never dropped
    ]
)

RETRIEVAL_GAPS = pa.schema(
    [
        ("request_id", pa.string()),
        ("sample_id", pa.string()),
        ("question", pa.string()),
        ("language", pa.string()),
        ("route", pa.string()),
        ("reason", pa.string()),  # the route reason: why no retrieved passage held the answer
        ("negatives", pa.int64()),  # the retrieved passages judged irrelevant
    ]
)

FREE_TEXT = frozenset({"query", "question", "reason", "pos.list.element.content", "neg.list.element.content"})

# BGE's query instructions for retrieval (FlagEmbedding's `prompt`), by the question's language.
QUERY_PROMPTS = {
    rules.ZH: "为这个句子生成表示以用于检索相关文章：",
    rules.EN: "Represent this sentence for searching relevant passages: ",
}
PAIR_TYPE = "normal"
JSONL_FIELDS = ("query", "pos", "neg", "pos_scores", "neg_scores", "prompt", "type")

SHORT_QUERY = "short_query"
LONG_QUERY = "long_query"

_WORD = re.compile(r"\S+")
_SPACE = re.compile(r"\s+")


@dataclass(frozen=True)
class PairSettings:
    min_query_length: int = 5
    max_query_length: int = 50


def query_length(query: str, language: str) -> int:
    """Characters (spaces left out) of a Chinese query, words of an English one."""
    return len(_SPACE.sub("", query)) if language == rules.ZH else len(_WORD.findall(query))


def query_flags(query: str, language: str, settings: PairSettings) -> list[str]:
    length = query_length(query, language)
    return [SHORT_QUERY] if length < settings.min_query_length else [LONG_QUERY] if length > settings.max_query_length else []


def split_passages(
    docs: Sequence[dict], roles: Sequence[str], similarities: Sequence[float] | None
) -> tuple[list[dict], list[dict]]:
    """The positives and hard negatives of one query: each text once, and a text that is a
    positive never a negative (a passage retrieved twice with different roles stays a positive)."""
    pos: list[dict] = []
    neg: list[dict] = []
    for index, (doc, role) in enumerate(zip(docs, roles)):
        passage = {
            "id": doc["id"],
            "content": doc["content"],
            "similarity": None if similarities is None else float(similarities[index]),
            "retrieval_score": doc["score"],
            "source": RETRIEVED,
        }
        if role == triage.POSITIVE:
            pos.append(passage)
        elif role == triage.NEGATIVE:
            neg.append(passage)
    pos = _unique(pos)
    positives = {passage["content"] for passage in pos}
    neg = [passage for passage in _unique(neg) if passage["content"] not in positives]
    return pos, neg


def _unique(passages: list[dict]) -> list[dict]:
    seen: set[str] = set()
    kept = []
    for passage in passages:
        if passage["content"] not in seen:
            seen.add(passage["content"])
            kept.append(passage)
    return kept


def pairs_of_batch(annotated: pa.RecordBatch, settings: PairSettings) -> tuple[pa.RecordBatch, pa.RecordBatch]:
    """An `ANNOTATED_SAMPLES` batch -> its `EMBEDDING_PAIRS` and `RETRIEVAL_GAPS` rows (the
    samples routed to retrieval or both; the others make neither)."""
    rows = annotated.filter(pc.is_in(annotated.column("route"), value_set=pa.array(triage.PAIR_ROUTES)))
    columns = {name: rows.column(name).to_pylist() for name in (
        "request_id", "sample_id", "question", "language", "route", "route_reason", "context_judged_by",
        "context_docs", "doc_roles", "doc_similarity",
    )}
    pairs: list[dict] = []
    gaps: list[dict] = []
    for i in range(rows.num_rows):
        docs = columns["context_docs"][i] or []
        pos, neg = split_passages(docs, columns["doc_roles"][i] or [], columns["doc_similarity"][i])
        query, language = columns["question"][i], columns["language"][i]
        if not pos:
            gaps.append({
                "request_id": columns["request_id"][i], "sample_id": columns["sample_id"][i], "question": query,
                "language": language, "route": columns["route"][i], "reason": columns["route_reason"][i],
                "negatives": len(neg),
            })
            continue
        pairs.append({
            "request_id": columns["request_id"][i], "sample_id": columns["sample_id"][i], "query": query,
            "language": language, "route": columns["route"][i], "judged_by": columns["context_judged_by"][i],
            "pos": pos, "neg": neg, "query_length": query_length(query, language),
            "flags": query_flags(query, language, settings),
        })
    return (pa.RecordBatch.from_pylist(pairs, schema=EMBEDDING_PAIRS), pa.RecordBatch.from_pylist(gaps, schema=RETRIEVAL_GAPS))


def _scores(passages: list[dict]) -> list[float]:
    """FlagEmbedding's teacher scores: the similarity, else the retrieval score, else 0."""
    return [float(p["similarity"] if p["similarity"] is not None else (p["retrieval_score"] or 0.0)) for p in passages]


def flag_embedding_line(pair: dict) -> dict:
    """One `EMBEDDING_PAIRS` row as a FlagEmbedding training line."""
    return {
        "query": pair["query"],
        "pos": [p["content"] for p in pair["pos"]],
        "neg": [p["content"] for p in pair["neg"]],
        "pos_scores": _scores(pair["pos"]),
        "neg_scores": _scores(pair["neg"]),
        "prompt": QUERY_PROMPTS.get(pair["language"], QUERY_PROMPTS[rules.EN]),
        "type": PAIR_TYPE,
    }


def jsonl_bytes(pairs: pa.RecordBatch | pa.Table) -> bytes:
    """The pairs as JSON Lines (UTF-8, Chinese readable), in order."""
    return b"".join(orjson.dumps(flag_embedding_line(pair)) + b"\n" for pair in pairs.to_pylist())


# The checks (declared in rag_sft/checks/pairs.py) ------------------------------------------------
PAIR_SIMILARITY = "pair_similarity"
QUERY_LENGTH = "query_length"
PAIRS_DISJOINT = "pairs_disjoint"

def overlapping_texts(pairs: pa.RecordBatch | pa.Table) -> list[str]:
    """request_ids of pairs that hold a text both as a positive and as a negative (must be none)."""
    found = []
    for pair in pairs.select(["request_id", "pos", "neg"]).to_pylist():
        if {p["content"] for p in pair["pos"]} & {p["content"] for p in pair["neg"]}:
            found.append(pair["request_id"])
    return found


def positive_similarities(pairs: pa.RecordBatch | pa.Table) -> np.ndarray:
    """Every measured query-positive similarity of the pairs."""
    flat = pc.list_flatten(pairs.column("pos"))
    values = pc.struct_field(flat, "similarity") if len(flat) else pa.array([], pa.float64())
    return pc.drop_null(values).to_numpy(zero_copy_only=False)


def similarity_verdict(similarities: np.ndarray, lowest: list[str], threshold: float) -> checks.Verdict:
    under = int((similarities < threshold).sum()) if len(similarities) else 0
    share = under / len(similarities) if len(similarities) else 0.0
    passed = under == 0
    description = (
        f"{PAIR_SIMILARITY}: all {len(similarities)} query-positive similarities >= {threshold:g}"
        if passed
        else f"{PAIR_SIMILARITY}: {under} of {len(similarities)} query-positive similarities under {threshold:g}"
    )
    return checks.Verdict(
        PAIR_SIMILARITY, passed, checks.WARN, description,
        {"positives": len(similarities), "under_threshold": under, "under_threshold_share": share,
         "min_similarity": float(similarities.min()) if len(similarities) else None, "lowest_pairs": lowest},
    )


def length_verdict(flagged: dict[str, list[str]], pairs: int) -> checks.Verdict:
    count = sum(len(ids) for ids in flagged.values())
    description = (
        f"{QUERY_LENGTH}: no query too short or too long among {pairs}"
        if not count
        else f"{QUERY_LENGTH}: {count} of {pairs} queries flagged for review ("
        + ", ".join(f"{flag} {len(ids)}" for flag, ids in sorted(flagged.items()) if ids) + "); kept"
    )
    return checks.Verdict(
        QUERY_LENGTH, not count, checks.WARN, description,
        {"flagged": count, **{flag: len(ids) for flag, ids in sorted(flagged.items())},
         "flagged_examples": [i for ids in flagged.values() for i in ids][:10]},
    )


def disjoint_verdict(overlapping: list[str], pairs: int) -> checks.Verdict:
    passed = not overlapping
    description = (
        f"{PAIRS_DISJOINT}: no text is both positive and negative in {pairs} pairs"
        if passed
        else f"{PAIRS_DISJOINT}: {len(overlapping)} pairs hold a text as both positive and negative"
    )
    return checks.Verdict(PAIRS_DISJOINT, passed, checks.ERROR, description, {"overlapping": len(overlapping), "examples": overlapping[:10]})
