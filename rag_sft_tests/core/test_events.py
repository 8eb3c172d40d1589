from datetime import UTC, datetime

import pytest

from rag_sft.core import events
from rag_sft.core.events import Rejection, normalize_event


def good_event(**overrides):
    event = {
        "request_id": "r-1",
        "question": "退款需要多久?",
        "docs": [{"id": "d1", "content": "七个工作日内到账。", "score": 0.9}],
        "answer": "三天。",
        "evaluation": {"score": 0.5, "labels": ["factuality_error"], "checks": {"factuality": 0.2}, "suggestion": "引用文档"},
        "timestamp": "2026-11-19T08:00:00Z",
    }
    event.update(overrides)
    return event


def with_evaluation(**overrides):
    event = good_event()
    event["evaluation"] = {**event["evaluation"], **overrides}
    return event


def reason_of(obj, **kwargs):
    with pytest.raises(Rejection) as caught:
        normalize_event(obj, **kwargs)
    return caught.value.reason, caught.value.detail


def test_good_event_is_normalized():
    event = normalize_event(good_event(request_id="  r-1 ", evaluation={"score": 1, "labels": [" Factuality_Error ", "factuality_error", ""]}))
    assert event["request_id"] == "r-1"
    assert event["labels"] == ["factuality_error"]
    assert event["score"] == 1.0 and isinstance(event["score"], float)
    assert event["checks"] == [] and event["suggestion"] == ""
    assert event["timestamp"] == datetime(2026, 11, 19, 8, tzinfo=UTC)


def test_missing_doc_score_counts_as_zero_and_ids_become_text():
    event = normalize_event(good_event(docs=[{"id": 7, "content": "x"}, {"content": "y", "score": None}]))
    assert event["docs"] == [{"id": "7", "content": "x", "score": 0.0}, {"id": "", "content": "y", "score": 0.0}]


def test_timestamp_offsets_are_converted_to_utc_and_naive_means_utc():
    assert normalize_event(good_event(timestamp="2026-11-19T23:30:00-05:00"))["timestamp"].date().isoformat() == "2026-11-20"
    assert normalize_event(good_event(timestamp="2026-11-19 10:00:00"))["timestamp"].tzinfo == UTC


@pytest.mark.parametrize(
    "obj, reason, fragment",
    [
        ([1, 2], events.NOT_AN_OBJECT, "array"),
        ("text", events.NOT_AN_OBJECT, "string"),
        ({k: v for k, v in good_event().items() if k != "question"}, events.MISSING_FIELD, "question"),
        (good_event(request_id=""), events.EMPTY_FIELD, "request_id"),
        (good_event(request_id="   "), events.EMPTY_FIELD, "request_id"),
        (good_event(question=None), events.MISSING_FIELD, "question"),
        (good_event(answer=None), events.MISSING_FIELD, "answer"),
        (good_event(answer=["no"]), events.WRONG_TYPE, "answer"),
        (good_event(request_id=12), events.WRONG_TYPE, "request_id"),
        (good_event(docs="see kb"), events.WRONG_TYPE, "docs must be a list"),
        (good_event(docs=["plain text"]), events.WRONG_TYPE, "docs[0]"),
        (good_event(docs=[{"id": "a"}]), events.MISSING_FIELD, "docs[0].content"),
        (good_event(docs=[{"content": "a", "score": "high"}]), events.WRONG_TYPE, "docs[0].score"),
        ({k: v for k, v in good_event().items() if k != "docs"}, events.MISSING_FIELD, "docs"),
        (good_event(evaluation="bad"), events.WRONG_TYPE, "evaluation"),
        (with_evaluation(labels="factuality_error"), events.WRONG_TYPE, "labels must be a list"),
        (with_evaluation(labels=[1]), events.WRONG_TYPE, "labels must hold strings"),
        (with_evaluation(checks=[0.1]), events.WRONG_TYPE, "checks"),
        (with_evaluation(checks={"f": "x"}), events.WRONG_TYPE, "checks.f"),
        (with_evaluation(suggestion=3), events.WRONG_TYPE, "suggestion"),
        (with_evaluation(score=1.2), events.SCORE_OUT_OF_RANGE, "1.2"),
        (with_evaluation(score=-0.1), events.SCORE_OUT_OF_RANGE, "-0.1"),
        (with_evaluation(score="0.5"), events.SCORE_NOT_A_NUMBER, "0.5"),
        (with_evaluation(score=True), events.SCORE_NOT_A_NUMBER, "True"),
        (with_evaluation(score=float("nan")), events.SCORE_NOT_A_NUMBER, "nan"),
        (with_evaluation(score=None), events.MISSING_FIELD, "evaluation.score"),
        (good_event(timestamp="yesterday"), events.INVALID_TIMESTAMP, "yesterday"),
        (good_event(timestamp=1732000000), events.INVALID_TIMESTAMP, "number"),
        (good_event(timestamp="0001-01-01T00:30:00+01:00"), events.INVALID_TIMESTAMP, "out of range"),
        (good_event(timestamp="9999-12-31T23:30:00-01:00"), events.INVALID_TIMESTAMP, "out of range"),
        ({k: v for k, v in good_event().items() if k != "timestamp"}, events.MISSING_FIELD, "timestamp"),
    ],
)
def test_every_reject_reason(obj, reason, fragment):
    got_reason, detail = reason_of(obj)
    assert got_reason == reason
    assert fragment in detail


def test_oversized_fields_are_rejected_with_the_limit():
    reason, detail = reason_of(good_event(answer="长" * 101), max_field_chars=100)
    assert reason == events.OVERSIZED_FIELD and "answer" in detail and "limit 100" in detail
    reason, detail = reason_of(good_event(docs=[{"content": "x" * 101}]), max_field_chars=100)
    assert reason == events.OVERSIZED_FIELD and "docs[0].content" in detail
    assert normalize_event(good_event(answer="长" * 100), max_field_chars=100)["answer"] == "长" * 100


@pytest.mark.parametrize("answer", ["", " ", "\u3000"])
def test_an_empty_or_blank_answer_is_accepted_as_it_is(answer):
    # docs/spec.md, "A raw quality event", marks only request_id and question non-empty: the RAG service did answer with
    # nothing.
    assert normalize_event(good_event(answer=answer))["answer"] == answer


def test_a_null_check_score_is_ignored_not_a_wrong_type():
    normalized = normalize_event(with_evaluation(checks={"factuality": None, "relevance": 0.4}))
    assert normalized["checks"] == [("relevance", 0.4)]
    assert normalize_event(with_evaluation(checks={"factuality": None}))["checks"] == []


def test_labels_may_be_missing_or_empty():
    assert normalize_event(with_evaluation(labels=[]))["labels"] == []
    event = good_event()
    del event["evaluation"]["labels"]
    assert normalize_event(event)["labels"] == []


def test_json_depth_counts_levels_of_arrays_and_objects_without_recursion():
    assert [events.json_depth(v) for v in (1, "s", [], {}, [1, {"a": [2]}], {"a": {"b": []}, "c": 1})] == [0, 0, 1, 1, 3, 3]
    deep: list = []
    for _ in range(100_000):
        deep = [deep]
    assert events.json_depth(deep) == 100_001
