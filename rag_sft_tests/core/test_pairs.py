"""Embedding pairs (docs/spec.md, "Rule 16: Embedding pairs") as plain functions."""

import numpy as np
import orjson

from rag_sft.core import pairs, tables
from rag_sft.core.pairs import PairSettings
from rag_sft.core.rules import RuleSettings
from rag_sft.core.triage import TriageSettings
from rag_sft_tests.core.test_triage import raw_batch, word_overlap

ROWS = [
    # retrieval fault by similarity: no positive -> a gap with two negatives
    ("how long do refunds take", ["the warranty excludes damage", "points expire"], ["low_relevance"], {}),
    # the answer ranked under noise: both; one positive, one negative, the same text retrieved twice
    ("what is the api limit", ["points expire", "the api limit is 100", "points expire"], ["incomplete_answer"], {}),
    # the evaluator says the passages lack the answer: all negatives -> a gap
    ("what is the api limit", ["the api limit is 100"], ["factuality_error"], {"context_relevance": 0.1}),
    # a generation fault: no pair
    ("how long do refunds take", ["refunds take seven days"], ["factuality_error"], {}),
]


def annotated(rows=ROWS, settings=TriageSettings()):
    return tables.with_triage(tables.annotate_batch(raw_batch(rows), RuleSettings()), settings, word_overlap)


def test_retrieval_faults_become_pairs_or_gaps_and_generation_faults_neither():
    made, gaps = pairs.pairs_of_batch(annotated(), PairSettings())
    assert made.schema == pairs.EMBEDDING_PAIRS and gaps.schema == pairs.RETRIEVAL_GAPS
    [pair] = made.to_pylist()
    assert (pair["request_id"], pair["route"], pair["judged_by"]) == ("r1", "both", "similarity")
    assert [p["content"] for p in pair["pos"]] == ["the api limit is 100"]
    assert [p["content"] for p in pair["neg"]] == ["points expire"]  # once, though retrieved twice
    assert pair["pos"][0]["source"] == "retrieved" and pair["pos"][0]["id"] == "d1-1"
    assert gaps.column("request_id").to_pylist() == ["r0", "r2"]
    assert gaps.column("negatives").to_pylist() == [2, 1]
    assert gaps.column("reason").to_pylist()[1].startswith("context missing by evaluator (context_relevance 0.1 < 0.5)")


def test_a_text_is_never_both_positive_and_negative_of_a_query():
    docs = [{"id": "a", "content": "same text", "score": 0.9}, {"id": "b", "content": "same text", "score": 0.2},
            {"id": "c", "content": "other", "score": 0.1}]
    pos, neg = pairs.split_passages(docs, ["positive", "negative", "negative"], [0.8, 0.8, 0.1])
    assert [p["content"] for p in pos] == ["same text"] and [p["content"] for p in neg] == ["other"]
    # Over many random rows too, through the whole batch path.
    rng = np.random.default_rng(5)
    words = ["api", "limit", "refund", "points", "days", "what", "is", "the"]
    rows = [
        (" ".join(rng.choice(words, 4)), [" ".join(rng.choice(words, 3)) for _ in range(rng.integers(1, 6))], ["low_relevance"], {})
        for _ in range(300)
    ]
    made, gaps = pairs.pairs_of_batch(annotated(rows, TriageSettings(min_similarity=0.3, max_negative_similarity=0.3)), PairSettings())
    assert made.num_rows > 20 and pairs.overlapping_texts(made) == []
    assert not pairs.disjoint_verdict(pairs.overlapping_texts(made), made.num_rows).holds_back


def test_flag_embedding_lines():
    made, _ = pairs.pairs_of_batch(annotated(), PairSettings())
    [line] = [orjson.loads(text) for text in pairs.jsonl_bytes(made).splitlines()]
    assert list(line) == list(pairs.JSONL_FIELDS)
    assert line["query"] == "what is the api limit" and line["pos"] == ["the api limit is 100"] and line["neg"] == ["points expire"]
    assert line["pos_scores"] == [0.8] and line["neg_scores"] == [0.0]
    assert line["prompt"] == pairs.QUERY_PROMPTS["en"] and line["type"] == "normal"
    assert not set(line["pos"]) & set(line["neg"])


def test_short_and_long_queries_are_flagged_in_characters_or_words_never_dropped():
    settings = PairSettings()
    assert pairs.query_length("退款 需要多久?", "zh") == 7 and pairs.query_length("how long do refunds take", "en") == 5
    assert pairs.query_flags("退款?", "zh", settings) == ["short_query"]
    assert pairs.query_flags("退款需要多久?", "zh", settings) == []
    assert pairs.query_flags("退" * 51, "zh", settings) == ["long_query"]
    assert pairs.query_flags("refund time", "en", settings) == ["short_query"]
    assert pairs.query_flags(" ".join(["word"] * 51), "en", settings) == ["long_query"]
    rows = [("api limit", ["points expire", "the api limit is 100"], ["low_relevance"], {})]
    made, _ = pairs.pairs_of_batch(annotated(rows), settings)
    assert made.column("flags").to_pylist() == [["short_query"]]
    verdict = pairs.length_verdict({"short_query": ["r0"], "long_query": []}, 1)
    assert not verdict.passed and verdict.severity == "WARN" and "1 of 1 queries flagged for review (short_query 1); kept" in verdict.description


def test_the_similarity_check_warns_on_positives_under_the_threshold():
    assert pairs.similarity_verdict(np.array([0.5, 0.9]), [], 0.35).passed
    verdict = pairs.similarity_verdict(np.array([0.2, 0.9]), ["r7"], 0.35)
    assert (verdict.passed, verdict.severity, verdict.metadata["under_threshold"], verdict.metadata["lowest_pairs"]) == (False, "WARN", 1, ["r7"])
    assert pairs.similarity_verdict(np.zeros(0), [], 0.35).passed
