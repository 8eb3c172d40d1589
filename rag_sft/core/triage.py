"""Triage (docs/spec.md, "Rule 15: Triage"): which part of the RAG service failed.

Each accepted event goes to exactly one route, with its reason:

- `generation`: the context held the answer and the answer is still wrong: SFT data, as before;
- `retrieval`: the context did not hold the answer (or only the retriever erred): embedding
  data; never an SFT sample, which would teach answering from passages that do not hold it;
- `both`: the answer-bearing passage was fetched but ranked under noise, and the answer failed:
  SFT data and embedding data;
- `review`: no signal can be trusted (the checks pass yet the score is low, or labels conflict
  with nothing to settle them): neither, counted for a person to look at.

Two verdicts decide it, from reference-free signals as RAGAS and TruLens define them (see
docs/retriever.md, "Triage signals"): the *context* verdict (evaluator checks
`context_relevance` / `context_precision`; else the project's question–passage similarity;
else retrieval scores, when calibrated) and the *generation* verdict (evaluator checks
`faithfulness` / `groundedness` / `answer_relevancy`; else the labels).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
import re
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from rag_sft.core import rules
from rag_sft.core.similarity import Similarity

GENERATION = "generation"
RETRIEVAL = "retrieval"
BOTH = "both"
REVIEW = "review"
ROUTES = (GENERATION, RETRIEVAL, BOTH, REVIEW)
SFT_ROUTES = (GENERATION, BOTH)  # become SFT samples
PAIR_ROUTES = (RETRIEVAL, BOTH)  # become embedding pairs (or retrieval gaps)

# sft_records' filter reasons of the routes that make no SFT sample.
TRIAGE_RETRIEVAL = "triage_retrieval"
TRIAGE_REVIEW = "triage_review"
FILTER_REASONS = {RETRIEVAL: TRIAGE_RETRIEVAL, REVIEW: TRIAGE_REVIEW}

# The context verdict.
RELEVANT = "relevant"  # the top-ranked passage holds the answer
PARTIAL = "partial"  # a passage holds it, ranked under one that does not (or context precision is low)
MISSING = "missing"  # no passage holds it
UNKNOWN = "unknown"  # no signal

# Who judged the context (the `context_judged_by` column).
BY_EVALUATOR = "evaluator"
BY_SIMILARITY = "similarity"
BY_RETRIEVAL_SCORE = "retrieval_score"
BY_NOTHING = "none"

# The evaluator's checks (evaluation.checks), by the names RAGAS and TruLens give them.
CONTEXT_RELEVANCE_CHECKS = ("context_relevance",)  # RAGAS / TruLens: does the context bear on the question
CONTEXT_PRECISION_CHECKS = ("context_precision",)  # RAGAS: are the relevant passages ranked first
GENERATION_CHECKS = ("faithfulness", "groundedness", "answer_relevancy", "answer_relevance")
# Labels that blame the generator (rule 1's); `low_relevance` points at retrieval.
GENERATOR_LABELS = (rules.FACTUALITY_ERROR, rules.INCOMPLETE_ANSWER, rules.OVERCONFIDENCE)
RETRIEVAL_LABELS = (rules.LOW_RELEVANCE,)

# The role of each context passage in embedding pairs (the `doc_roles` column).
POSITIVE = "positive"
NEGATIVE = "negative"
NEUTRAL = "neutral"  # between the thresholds: neither (a false hard negative hurts more than a missing one)


@dataclass(frozen=True)
class TriageSettings:
    """The thresholds (docs/retriever.md, "Thresholds and how to calibrate them")."""

    enabled: bool = True
    min_context_relevance: float = 0.5
    min_context_precision: float = 0.5
    min_generation_check: float = 0.5
    min_similarity: float = 0.35  # a passage at least this similar to the question holds the answer
    max_negative_similarity: float = 0.25  # a hard negative is at most this similar
    min_retrieval_score: float = 0.0  # 0: retrieval scores are not a signal (their scale is the retriever's)


@dataclass(frozen=True)
class Decision:
    route: str
    reason: str
    context: str
    judged_by: str
    doc_roles: tuple[str, ...]  # one per context passage


def _first(checks: Mapping[str, float], names: Sequence[str]) -> tuple[str, float] | None:
    return next(((name, checks[name]) for name in names if checks.get(name) is not None), None)


def context_verdict(
    checks: Mapping[str, float],
    doc_scores: Sequence[float | None],
    similarities: Sequence[float] | None,
    settings: TriageSettings,
) -> tuple[str, str, str]:
    """(verdict, judged_by, why) for the context passages the generator saw, best-ranked first."""
    if not doc_scores:
        return MISSING, BY_NOTHING, "no passage was retrieved"
    relevance = _first(checks, CONTEXT_RELEVANCE_CHECKS)
    precision = _first(checks, CONTEXT_PRECISION_CHECKS)
    if relevance is not None:
        name, value = relevance
        if value < settings.min_context_relevance:
            return MISSING, BY_EVALUATOR, f"{name} {value:g} < {settings.min_context_relevance:g}"
        if precision is not None and precision[1] < settings.min_context_precision:
            return PARTIAL, BY_EVALUATOR, f"{precision[0]} {precision[1]:g} < {settings.min_context_precision:g}"
        return RELEVANT, BY_EVALUATOR, f"{name} {value:g} >= {settings.min_context_relevance:g}"
    if precision is not None:
        name, value = precision
        if value < settings.min_context_precision:
            return PARTIAL, BY_EVALUATOR, f"{name} {value:g} < {settings.min_context_precision:g}"
        return RELEVANT, BY_EVALUATOR, f"{name} {value:g} >= {settings.min_context_precision:g}"
    if similarities is not None and len(similarities):
        best = max(similarities)
        if best < settings.min_similarity:
            return MISSING, BY_SIMILARITY, f"best passage similarity {best:.3f} < {settings.min_similarity:g}"
        if similarities[0] < settings.min_similarity:
            return PARTIAL, BY_SIMILARITY, (
                f"top passage similarity {similarities[0]:.3f} < {settings.min_similarity:g}, a lower one {best:.3f}"
            )
        return RELEVANT, BY_SIMILARITY, f"top passage similarity {similarities[0]:.3f} >= {settings.min_similarity:g}"
    if settings.min_retrieval_score > 0:
        top = max(score or 0.0 for score in doc_scores)
        if top < settings.min_retrieval_score:
            return MISSING, BY_RETRIEVAL_SCORE, f"top retrieval score {top:g} < {settings.min_retrieval_score:g}"
    return UNKNOWN, BY_NOTHING, "no context signal"


FAULT, OK, RETRIEVAL_LABEL, CONFLICT = "fault", "ok", "retrieval_label", "conflict"


def generation_verdict(labels: Sequence[str], checks: Mapping[str, float], settings: TriageSettings) -> tuple[str, str]:
    """(verdict, why): the evaluator's generation checks when sent, else the labels."""
    sent = [(name, checks[name]) for name in GENERATION_CHECKS if checks.get(name) is not None]
    if sent:
        low = [(name, value) for name, value in sent if value < settings.min_generation_check]
        if low:
            return FAULT, f"{low[0][0]} {low[0][1]:g} < {settings.min_generation_check:g}"
        return OK, f"{', '.join(name for name, _ in sent)} >= {settings.min_generation_check:g}"
    blamed = [label for label in labels if label in GENERATOR_LABELS]
    retrieval = [label for label in labels if label in RETRIEVAL_LABELS]
    if blamed and retrieval:
        return CONFLICT, f"labels {blamed[0]} and {retrieval[0]}"
    if blamed:
        return FAULT, f"label {blamed[0]}"
    if retrieval:
        return RETRIEVAL_LABEL, f"label {retrieval[0]}"
    return UNKNOWN, "no generation signal"


# (context verdict, generation verdict) -> route. Read as a table in docs/retriever.md, "Routes".
ROUTE_TABLE = {
    (RELEVANT, FAULT): GENERATION,
    (RELEVANT, RETRIEVAL_LABEL): GENERATION,  # the passages held the answer: the answer drifted off them
    (RELEVANT, CONFLICT): GENERATION,
    (RELEVANT, UNKNOWN): GENERATION,  # the passages held the answer: the low score is the answer's
    (RELEVANT, OK): REVIEW,  # the checks pass on relevant passages, yet the score is low
    (PARTIAL, FAULT): BOTH,
    (PARTIAL, RETRIEVAL_LABEL): BOTH,
    (PARTIAL, CONFLICT): BOTH,
    (PARTIAL, UNKNOWN): BOTH,
    (PARTIAL, OK): RETRIEVAL,  # a good answer despite the ranking: only the retriever has to learn
    (MISSING, FAULT): RETRIEVAL,  # an SFT sample would teach answering from passages without the answer
    (MISSING, RETRIEVAL_LABEL): RETRIEVAL,
    (MISSING, CONFLICT): RETRIEVAL,
    (MISSING, UNKNOWN): RETRIEVAL,
    (MISSING, OK): RETRIEVAL,
    (UNKNOWN, FAULT): GENERATION,  # nothing says the context failed: the labels blame the answer (as before triage)
    (UNKNOWN, RETRIEVAL_LABEL): RETRIEVAL,  # the label points at retrieval
    (UNKNOWN, CONFLICT): REVIEW,
    (UNKNOWN, UNKNOWN): REVIEW,
    (UNKNOWN, OK): REVIEW,
}


def doc_roles(context: str, judged_by: str, similarities: Sequence[float] | None, count: int, settings: TriageSettings) -> tuple[str, ...]:
    """Each context passage as a positive, a hard negative or neither. A passage is a positive
    when it is similar enough to the question; a negative when the evaluator said the context
    holds no answer, or it is clearly dissimilar (under `max_negative_similarity`, below
    `min_similarity`: the margin keeps a text from being both)."""
    if context == MISSING and judged_by == BY_EVALUATOR:
        return (NEGATIVE,) * count
    if similarities is None or len(similarities) != count:
        return (NEUTRAL,) * count
    roles = []
    for value in similarities:
        if value >= settings.min_similarity and context != MISSING:
            roles.append(POSITIVE)
        elif value <= min(settings.max_negative_similarity, settings.min_similarity):
            roles.append(NEGATIVE)
        else:
            roles.append(NEUTRAL)
    return tuple(roles)


def triage(
    labels: Sequence[str],
    checks: Mapping[str, float],
    doc_scores: Sequence[float | None],
    similarities: Sequence[float] | None,
    settings: TriageSettings = TriageSettings(),
) -> Decision:
    """The route of one event, its reason, and the roles of its context passages."""
    if not settings.enabled:
        return Decision(GENERATION, "triage off", UNKNOWN, BY_NOTHING, (NEUTRAL,) * len(doc_scores))
    context, judged_by, context_why = context_verdict(checks, doc_scores, similarities, settings)
    generation, generation_why = generation_verdict(labels, checks, settings)
    route = ROUTE_TABLE[(context, generation)]
    roles = doc_roles(context, judged_by, similarities, len(doc_scores), settings)
    reason = f"context {context} by {judged_by} ({context_why}); generation {generation} ({generation_why})"
    return Decision(route, reason, context, judged_by, roles)


def reason_kind(reason: str) -> str:
    """A route reason without its numbers ("context missing by similarity; generation fault"):
    what a day's metadata counts."""
    return re.sub(r" \([^()]*\)", "", reason)


def needs_similarity(checks: Mapping[str, float]) -> bool:
    """Whether the evaluator left the context unjudged (the project's similarity is then needed)."""
    return _first(checks, (*CONTEXT_RELEVANCE_CHECKS, *CONTEXT_PRECISION_CHECKS)) is None


# Arrow ------------------------------------------------------------------------------------------
TRIAGE_FIELDS = [
    ("route", pa.string()),
    ("route_reason", pa.string()),
    ("context_judged_by", pa.string()),
    ("doc_similarity", pa.list_(pa.float64())),
    ("doc_roles", pa.list_(pa.string())),
]


def triage_columns(annotated: pa.RecordBatch, settings: TriageSettings, similarity: Similarity | None) -> dict[str, pa.Array]:
    """The `TRIAGE_FIELDS` columns of an annotated batch (`labels`, `checks`, `question`,
    `context_docs`). Similarities are computed only for rows the evaluator left unjudged,
    and all pairs-bound rows (their passages need roles), in one call per batch."""
    labels = annotated.column("labels").to_pylist()
    checks = [dict(row or []) for row in annotated.column("checks").to_pylist()]
    docs = annotated.column("context_docs").to_pylist()
    questions = annotated.column("question").to_pylist()
    scores = [[doc["score"] for doc in row or []] for row in docs]
    sims: list[np.ndarray | None] = [None] * annotated.num_rows
    if similarity is not None and settings.enabled:
        # Rows the evaluator left unjudged need the similarities for their context verdict; the
        # judged ones only when their route makes pairs (each passage needs a role).
        wanted = [
            row
            for row in range(annotated.num_rows)
            if docs[row]
            and (needs_similarity(checks[row]) or triage(labels[row] or [], checks[row], scores[row], None, settings).route in PAIR_ROUTES)
        ]
        if wanted:
            found = similarity([questions[row] for row in wanted], [[doc["content"] for doc in docs[row]] for row in wanted])
            for row, values in zip(wanted, found):
                sims[row] = values
    decisions = []
    for row in range(annotated.num_rows):
        row_sims = None if sims[row] is None else [float(value) for value in sims[row]]
        decisions.append(triage(labels[row] or [], checks[row], scores[row], row_sims, settings))
    return {
        "route": pa.array([d.route for d in decisions], pa.string()),
        "route_reason": pa.array([d.reason for d in decisions], pa.string()),
        "context_judged_by": pa.array([d.judged_by for d in decisions], pa.string()),
        "doc_similarity": pa.array(
            [None if s is None else [round(float(v), 6) for v in s] for s in sims], pa.list_(pa.float64())
        ),
        "doc_roles": pa.array([list(d.doc_roles) for d in decisions], pa.list_(pa.string())),
    }


def sft_filter_reasons(route: pa.Array) -> pa.Array:
    """Per row, the filter reason its route gives an SFT sample (`triage_retrieval`,
    `triage_review`), null for the SFT routes (and rows never triaged)."""
    keys = pa.array(list(FILTER_REASONS), pa.string())
    return pa.array(list(FILTER_REASONS.values()), pa.string()).take(pc.index_in(route, value_set=keys))


def for_sft(batch: pa.RecordBatch) -> pa.RecordBatch:
    """The rows of a batch whose route makes an SFT sample (all of them when it has no route)."""
    if "route" not in batch.schema.names:
        return batch
    return batch.filter(pc.is_null(sft_filter_reasons(batch.column("route"))))


def reason_counts(batch: pa.RecordBatch) -> dict[tuple[str, str], int]:
    """(route, reason kind) -> samples, over a batch with `route` and `route_reason`."""
    counts: dict[tuple[str, str], int] = {}
    for route, reason in zip(batch.column("route").to_pylist(), batch.column("route_reason").to_pylist()):
        key = (route, reason_kind(reason or ""))
        counts[key] = counts.get(key, 0) + 1
    return counts
