"""Validation and normalization of raw quality events (docs/spec.md, "A raw quality event").

An event is accepted as a normalized dict or refused with a `Rejection` carrying a stable
reason code, so every bad line ends in the dead letter with a reason an engineer can act on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

# Stable reason codes: they are the values of `rejected_events.reason`.
INVALID_UTF8 = "invalid_utf8"
INVALID_JSON = "invalid_json"
NOT_AN_OBJECT = "not_an_object"
MISSING_FIELD = "missing_field"
EMPTY_FIELD = "empty_field"
WRONG_TYPE = "wrong_type"
SCORE_NOT_A_NUMBER = "score_not_a_number"
SCORE_OUT_OF_RANGE = "score_out_of_range"
INVALID_TIMESTAMP = "invalid_timestamp"
TIMESTAMP_OUT_OF_RANGE = "timestamp_out_of_range"
OVERSIZED_FIELD = "oversized_field"
MISSING_ID = "missing_id"  # a SQL row whose id is NULL: it has no place among the table's rows
DUPLICATE_REQUEST_ID = "duplicate_request_id"


DEFAULT_MAX_FIELD_CHARS = 32_768
# Far above an event's own depth (3: event, docs, doc) and far below what any decoder on any
# stack handles, so a hostile line is rejected the same way whichever path judges it.
MAX_JSON_DEPTH = 64
TOO_DEEP_DETAIL = f"nesting is too deep (more than {MAX_JSON_DEPTH} levels of arrays and objects)"


@dataclass(frozen=True)
class Rejection(Exception):
    """Why an event cannot be used; `reason` is a code, `detail` says which field and what."""

    reason: str
    detail: str

    def __str__(self) -> str:
        return f"{self.reason}: {self.detail}"

    def __reduce__(self):
        return Rejection, (self.reason, self.detail)  # crosses process boundaries intact


def parse_timestamp(value: Any) -> datetime:
    """ISO 8601 text (or a datetime from a SQL driver) as an aware UTC datetime.

    A timestamp without an offset is taken as UTC, the convention of the event producer.
    """
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, str) and value.strip():
        text = value.strip()
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            raise Rejection(INVALID_TIMESTAMP, f"timestamp {text[:64]!r} is not ISO 8601") from None
    else:
        raise Rejection(INVALID_TIMESTAMP, f"timestamp must be ISO 8601 text, got {_type_name(value)}")
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    try:
        return parsed.astimezone(UTC)
    except OverflowError:  # e.g. 0001-01-01T00:00:00+01:00 is before the first representable day
        raise Rejection(INVALID_TIMESTAMP, f"timestamp {parsed.isoformat()!r} is out of range in UTC") from None


def timestamp_date(value: Any) -> date | None:
    """The UTC date of a timestamp value, or None when it cannot be read."""
    try:
        return parse_timestamp(value).date()
    except Rejection:
        return None


def normalize_event(obj: Any, max_field_chars: int = DEFAULT_MAX_FIELD_CHARS) -> dict:
    """Check one decoded event against the schema and return its normalized form.

    Normalized: ids and question stripped, doc scores as floats (missing or null -> 0.0),
    doc ids as text, labels stripped, lower-cased and de-duplicated in order, timestamp in UTC.
    Raises `Rejection` on the first problem found.
    """
    if not isinstance(obj, dict):
        raise Rejection(NOT_AN_OBJECT, f"event is a JSON {_type_name(obj)}, not an object")

    request_id = _required_text(obj, "request_id", max_field_chars).strip()
    if not request_id:
        raise Rejection(EMPTY_FIELD, "request_id is blank")
    question = _required_text(obj, "question", max_field_chars).strip()
    if not question:
        raise Rejection(EMPTY_FIELD, "question is blank")
    # docs/spec.md, "A raw quality event", marks only request_id and question non-empty: an empty answer is still a
    # low-scoring answer to correct (the completion strategy decides what it can make of it).
    answer = _required_text(obj, "answer", max_field_chars, allow_empty=True)

    docs = _normalize_docs(obj, max_field_chars)
    evaluation = _normalize_evaluation(obj, max_field_chars)

    if "timestamp" not in obj or obj["timestamp"] is None:
        raise Rejection(MISSING_FIELD, "timestamp is missing")
    timestamp = parse_timestamp(obj["timestamp"])

    return {
        "request_id": request_id,
        "question": question,
        "answer": answer,
        "docs": docs,
        **evaluation,
        "timestamp": timestamp,
    }


def _required_text(obj: dict, field: str, max_chars: int, allow_empty: bool = False) -> str:
    if field not in obj or obj[field] is None:
        raise Rejection(MISSING_FIELD, f"{field} is missing")
    value = obj[field]
    if not isinstance(value, str):
        raise Rejection(WRONG_TYPE, f"{field} must be a string, got {_type_name(value)}")
    if value == "" and not allow_empty:
        raise Rejection(EMPTY_FIELD, f"{field} is empty")
    _check_size(field, value, max_chars)
    return value


def _check_size(field: str, value: str, max_chars: int) -> None:
    if len(value) > max_chars:
        raise Rejection(OVERSIZED_FIELD, f"{field} has {len(value)} characters, limit {max_chars}")


def _normalize_docs(obj: dict, max_chars: int) -> list[dict]:
    if "docs" not in obj or obj["docs"] is None:
        raise Rejection(MISSING_FIELD, "docs is missing")
    raw_docs = obj["docs"]
    if not isinstance(raw_docs, list):
        raise Rejection(WRONG_TYPE, f"docs must be a list, got {_type_name(raw_docs)}")
    docs = []
    for index, doc in enumerate(raw_docs):
        where = f"docs[{index}]"
        if not isinstance(doc, dict):
            raise Rejection(WRONG_TYPE, f"{where} must be an object, got {_type_name(doc)}")
        content = doc.get("content")
        if content is None:
            raise Rejection(MISSING_FIELD, f"{where}.content is missing")
        if not isinstance(content, str):
            raise Rejection(WRONG_TYPE, f"{where}.content must be a string, got {_type_name(content)}")
        _check_size(f"{where}.content", content, max_chars)
        doc_id = doc.get("id")
        if doc_id is None:
            doc_id = ""
        elif isinstance(doc_id, bool) or not isinstance(doc_id, (str, int)):
            raise Rejection(WRONG_TYPE, f"{where}.id must be a string, got {_type_name(doc_id)}")
        score = doc.get("score")
        if score is None:
            score = 0.0  # docs/spec.md, "A raw quality event": a missing doc score counts as 0
        elif isinstance(score, bool) or not isinstance(score, (int, float)) or math.isnan(score):
            raise Rejection(WRONG_TYPE, f"{where}.score must be a number, got {_type_name(score)}")
        docs.append({"id": str(doc_id), "content": content, "score": float(score)})
    return docs


def _normalize_evaluation(obj: dict, max_chars: int) -> dict:
    if "evaluation" not in obj or obj["evaluation"] is None:
        raise Rejection(MISSING_FIELD, "evaluation is missing")
    evaluation = obj["evaluation"]
    if not isinstance(evaluation, dict):
        raise Rejection(WRONG_TYPE, f"evaluation must be an object, got {_type_name(evaluation)}")

    if "score" not in evaluation or evaluation["score"] is None:
        raise Rejection(MISSING_FIELD, "evaluation.score is missing")
    score = evaluation["score"]
    if isinstance(score, bool) or not isinstance(score, (int, float)) or math.isnan(score):
        raise Rejection(SCORE_NOT_A_NUMBER, f"evaluation.score must be a number, got {score!r:.40}")
    if not 0.0 <= score <= 1.0:
        raise Rejection(SCORE_OUT_OF_RANGE, f"evaluation.score {score} is outside [0, 1]")

    raw_labels = evaluation.get("labels")
    if raw_labels is None:
        raw_labels = []
    if not isinstance(raw_labels, list):
        raise Rejection(WRONG_TYPE, f"evaluation.labels must be a list, got {_type_name(raw_labels)}")
    for label in raw_labels:
        if not isinstance(label, str):
            raise Rejection(WRONG_TYPE, f"evaluation.labels must hold strings, got {_type_name(label)}")
    labels = normalize_labels(raw_labels)

    raw_checks = evaluation.get("checks")
    if raw_checks is None:
        raw_checks = {}
    if not isinstance(raw_checks, dict):
        raise Rejection(WRONG_TYPE, f"evaluation.checks must be an object, got {_type_name(raw_checks)}")
    checks = []
    for name, value in raw_checks.items():
        if value is None:
            continue  # an evaluator that did not run a check reports null: no score to keep
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise Rejection(WRONG_TYPE, f"evaluation.checks.{name} must be a number, got {_type_name(value)}")
        checks.append((name, float(value)))

    suggestion = evaluation.get("suggestion")
    if suggestion is None:
        suggestion = ""
    if not isinstance(suggestion, str):
        raise Rejection(WRONG_TYPE, f"evaluation.suggestion must be a string, got {_type_name(suggestion)}")
    _check_size("evaluation.suggestion", suggestion, max_chars)

    return {"score": float(score), "labels": labels, "checks": checks, "suggestion": suggestion}


def json_depth(value: Any) -> int:
    """Levels of nested arrays and objects in a decoded JSON value (a scalar is 0); iterative,
    so any depth is measured without recursion."""
    depth = 0
    pending = [(value, 1)]
    while pending:
        item, level = pending.pop()
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        depth = max(depth, level)
        pending.extend((child, level + 1) for child in children if isinstance(child, (dict, list)))
    return depth


def normalize_labels(labels: list[str]) -> list[str]:
    """Stripped, lower-cased, blank ones dropped, each once, in order."""
    normalized: list[str] = []
    for label in labels:
        label = label.strip().lower()
        if label and label not in normalized:
            normalized.append(label)
    return normalized


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__
