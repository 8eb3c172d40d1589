"""Triage (docs/spec.md, "Rule 15: Triage") as plain functions, without Dagster."""

from collections import Counter

import numpy as np
import pyarrow as pa
import pytest

from rag_sft.core import tables, triage
from rag_sft.core.completion import NaiveCompletion
from rag_sft.core.records import RecordsTally
from rag_sft.core.rules import RuleSettings
from rag_sft.core.similarity import WordLlamaSimilarity
from rag_sft.core.triage import BOTH, GENERATION, RETRIEVAL, REVIEW, TriageSettings

SETTINGS = TriageSettings()
SCORES = [0.9, 0.5, 0.3]


def route(labels, checks=None, similarities=None, scores=SCORES, settings=SETTINGS):
    return triage.triage(labels, checks or {}, scores, similarities, settings)


# The examples of docs/spec.md, "Rule 15: Triage" and the issue: ---------------------------------
def test_a_factuality_error_on_relevant_passages_is_the_generators():
    decision = route(["factuality_error"], {"context_relevance": 0.9})
    assert decision.route == GENERATION
    assert decision.reason.startswith("context relevant by evaluator (context_relevance 0.9 >= 0.5); generation fault")


def test_a_factuality_error_whose_passages_lack_the_answer_is_a_retrieval_fault_not_an_sft_sample():
    decision = route(["factuality_error"], {"context_relevance": 0.1})
    assert decision.route == RETRIEVAL
    assert decision.doc_roles == ("negative",) * 3  # the evaluator read them: all hard negatives


def test_low_relevance_points_at_retrieval_unless_the_passages_held_the_answer():
    assert route(["low_relevance"], similarities=[0.1, 0.05, 0.2]).route == RETRIEVAL
    assert route(["low_relevance"], similarities=[0.6, 0.2, 0.1]).route == GENERATION
    assert route(["low_relevance"]).route == RETRIEVAL  # no context signal: the label decides


def test_the_answer_ranked_under_noise_with_a_wrong_answer_is_both():
    decision = route(["factuality_error"], similarities=[0.1, 0.7, 0.3])
    assert (decision.route, decision.context) == (BOTH, "partial")
    assert decision.doc_roles == ("negative", "positive", "neutral")
    assert route([], {"context_relevance": 0.8, "context_precision": 0.2, "faithfulness": 0.1}).route == BOTH


def test_neither_signal_trustworthy_goes_to_review():
    # The evaluator's checks all pass on relevant passages, yet the score was low.
    assert route(["factuality_error"], {"context_relevance": 0.9, "faithfulness": 0.9, "answer_relevancy": 0.8}).route == REVIEW
    assert route([]).route == REVIEW  # no label, no check, no similarity
    assert route(["factuality_error", "low_relevance"]).route == REVIEW  # labels disagree, nothing settles them
    assert route(["citation_missing"]).route == REVIEW


def test_generation_checks_outrank_labels_and_ragas_and_trulens_names_are_accepted():
    for name in ("faithfulness", "groundedness", "answer_relevancy", "answer_relevance"):
        assert route(["low_relevance"], {"context_relevance": 0.9, name: 0.2}).route == GENERATION
    assert route(["factuality_error"], {"context_precision": 0.9}).context == "relevant"
    # Today's sample checks (factuality, relevance, ...) are not triage signals.
    assert route(["factuality_error"], {"relevance": 0.0, "factuality": 0.0}).route == GENERATION


def test_retrieval_scores_count_only_when_calibrated_and_nothing_else_judged():
    low = [0.12, 0.08]
    assert route(["factuality_error"], scores=low).route == GENERATION
    calibrated = TriageSettings(min_retrieval_score=0.3)
    assert route(["factuality_error"], scores=low, settings=calibrated).route == RETRIEVAL
    assert route(["factuality_error"], scores=[0.9], settings=calibrated).route == GENERATION
    # The similarity outranks the scores.
    assert route(["factuality_error"], similarities=[0.8, 0.7], scores=low, settings=calibrated).route == GENERATION


def test_no_passage_retrieved_is_a_retrieval_fault():
    assert route(["factuality_error"], scores=[]).route == RETRIEVAL


def test_off_keeps_every_event_for_the_generator():
    assert route(["low_relevance"], {"context_relevance": 0.0}, settings=TriageSettings(enabled=False)).route == GENERATION


def test_every_combination_has_a_route_and_no_passage_is_both_positive_and_negative():
    rng = np.random.default_rng(3)
    for _ in range(500):
        sims = list(rng.uniform(-0.2, 1.0, size=rng.integers(1, 5)))
        checks = {name: float(rng.random()) for name in ("context_relevance", "faithfulness") if rng.random() < 0.5}
        labels = list(rng.choice(["factuality_error", "low_relevance", "overconfidence", "x"], size=rng.integers(0, 3)))
        decision = route(labels, checks, sims, scores=[0.5] * len(sims))
        assert decision.route in triage.ROUTES
        for role, value in zip(decision.doc_roles, sims):
            assert role != "positive" or value >= SETTINGS.min_similarity
            assert role != "negative" or value <= SETTINGS.max_negative_similarity or checks.get("context_relevance", 1) < 0.5


# Over Arrow batches -----------------------------------------------------------------------------
def raw_batch(rows):
    from datetime import UTC, datetime

    events = [
        {
            "request_id": f"r{n}",
            "question": question,
            "answer": "an answer",
            "docs": [{"id": f"d{n}-{i}", "content": text, "score": 0.9 - i * 0.1} for i, text in enumerate(docs)],
            "score": 0.6,
            "labels": labels,
            "checks": checks,
            "suggestion": "",
            "timestamp": datetime(2026, 11, 19, tzinfo=UTC),
        }
        for n, (question, docs, labels, checks) in enumerate(rows)
    ]
    return tables.raw_events_batch(events, ["t"] * len(events), list(range(len(events))))


def word_overlap(questions, passages):
    """A stand-in similarity: the share of the question's words found in the passage."""
    calls.append(len(questions))
    result = []
    for question, texts in zip(questions, passages):
        words = set(question.lower().strip("?").split())
        result.append(np.array([len(words & set(text.lower().strip(".").split())) / len(words) for text in texts]))
    return result


calls: list[int] = []

ROWS = [
    ("how long do refunds take", ["refunds take seven days", "holidays are extra"], ["factuality_error"], {}),
    ("how long do refunds take", ["the warranty excludes damage", "points expire"], ["low_relevance"], {}),
    ("what is the api limit", ["points expire", "the api limit is 100"], ["incomplete_answer"], {}),
    ("what is the api limit", ["points expire"], ["factuality_error"], {"context_relevance": 0.9, "faithfulness": 0.9}),
    ("who are you", ["refunds take seven days"], ["factuality_error"], {"context_relevance": 0.9}),
]


def test_the_triage_columns_route_every_row_and_compute_similarity_only_where_needed():
    calls.clear()
    annotated = tables.with_triage(tables.annotate_batch(raw_batch(ROWS), RuleSettings()), SETTINGS, word_overlap)
    assert annotated.schema == tables.ANNOTATED_SAMPLES
    assert annotated.column("route").to_pylist() == [GENERATION, RETRIEVAL, BOTH, REVIEW, GENERATION]
    assert annotated.column("context_judged_by").to_pylist() == ["similarity", "similarity", "similarity", "evaluator", "evaluator"]
    # The judged rows 3 and 4 route to SFT or review: their passages need no similarity.
    assert calls == [3] and annotated.column("doc_similarity").to_pylist()[3:] == [None, None]
    assert annotated.column("doc_roles").to_pylist()[1] == ["negative", "negative"]
    counts = triage.reason_counts(annotated)
    assert sum(counts.values()) == 5
    assert counts[(RETRIEVAL, "context missing by similarity; generation retrieval_label")] == 1


def test_retrieval_and_review_make_no_sft_sample_and_the_records_still_add_up():
    annotated = tables.with_triage(tables.annotate_batch(raw_batch(ROWS), RuleSettings()), SETTINGS, word_overlap)
    records = tables.records_batch(annotated, RuleSettings(), NaiveCompletion(), {"factuality_error": 1.0})
    assert records.column("status").to_pylist() == ["exported", "filtered", "exported", "filtered", "exported"]
    assert records.column("filter_reason").to_pylist() == [None, "triage_retrieval", None, "triage_review", None]
    assert records.column("route").to_pylist() == annotated.column("route").to_pylist()
    tally = RecordsTally(keep_sample_ids=False)
    tally.add(records)
    tally.require_accounts_for(records.num_rows, "2026-11-19")
    assert tally.routes == Counter({GENERATION: 2, RETRIEVAL: 1, BOTH: 1, REVIEW: 1})
    assert tally.would_export + tally.filtered == 5
    # Label weights count only the samples SFT gets.
    assert tables.exported_label_counts(annotated, RuleSettings()) == {"factuality_error": 2, "incomplete_answer": 1}


def test_records_of_samples_never_triaged_are_all_for_sft():
    records = tables.records_batch(tables.annotate_batch(raw_batch(ROWS), RuleSettings()), RuleSettings(), NaiveCompletion(), {})
    assert records.column("filter_reason").null_count == 5 and records.column("route").null_count == 5


def test_wordllama_tells_a_passage_that_answers_from_one_that_does_not():
    similarity = WordLlamaSimilarity()
    [values] = similarity(
        ["How long does a refund take?"],
        [["Refunds arrive within seven business days.", "The warranty does not cover accidental damage."]],
    )
    assert values[0] > SETTINGS.min_similarity > SETTINGS.max_negative_similarity > values[1]
    assert similarity([], []) == []
    assert pytest.approx(similarity(["a"], [[]])[0].size) == 0
