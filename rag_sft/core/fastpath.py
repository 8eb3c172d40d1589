"""The fast path of ingestion: well-formed JSON lines straight to `RAW_EVENTS` Arrow columns.

`events.normalize_event` is the rule book; this module only speeds up the common case. msgspec
checks the types while decoding, the long texts (answer, doc contents) stay UTF-8 bytes and
are unescaped, validated and measured by Arrow, and everything the fast path is not sure about
(any type error, blank or oversized text, bad UTF-8, a bad timestamp) is handed back to the
rule book, which then gives the authoritative reason. Accepted by the fast path therefore
always means accepted by `normalize_event`, with the same normalized values (tested).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import msgspec
import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from rag_sft.core import events, tables


class _Doc(msgspec.Struct):
    content: msgspec.Raw  # a JSON string literal, checked and unescaped in Arrow
    id: str | int | None = None
    score: float | None = None


class _Evaluation(msgspec.Struct):
    score: float
    labels: list[str] | None = None
    checks: dict[str, float] | None = None
    suggestion: str | None = None


class _Event(msgspec.Struct):
    request_id: str
    question: str
    answer: msgspec.Raw
    docs: list[_Doc]
    evaluation: _Evaluation
    timestamp: str


_DECODER = msgspec.json.Decoder(_Event)
# A character Python's str.strip() keeps: an answer holding one is not blank.
_NOT_BLANK = r"[^\s\x{1c}-\x{1f}\x{85}\x{a0}\x{1680}\x{2000}-\x{200a}\x{2028}\x{2029}\x{202f}\x{205f}\x{3000}]"


@dataclass
class FastResult:
    batch: pa.RecordBatch | None  # RAW_EVENTS rows the fast path accepted, in line order
    positions: list[int]  # the input position of each row of `batch`
    undecided: list[int]  # positions for the rule book to judge


def decode_lines(raws: list[bytes], sources: list[str], lines: list[int], max_chars: int) -> FastResult:
    """Accept what is certainly valid; every other position is returned as undecided."""
    undecided: list[int] = []
    positions: list[int] = []
    request_ids: list[str] = []
    questions: list[bytes] = []
    answers: list[bytes] = []
    micros: list[int] = []
    scores: list[float] = []
    labels: list[list[str]] = []
    checks: list[list[tuple[str, float]]] = []
    suggestions: list[bytes] = []
    doc_offsets = [0]
    doc_ids: list[str] = []
    doc_contents: list[bytes] = []
    doc_scores: list[float] = []
    for position, raw in enumerate(raws):
        try:
            event = _DECODER.decode(raw)
            fields = _small_fields(event, max_chars)
        except (msgspec.MsgspecError, UnicodeDecodeError, events.Rejection):
            fields = None
        if fields is None:
            undecided.append(position)
            continue
        positions.append(position)
        request_id, question, answer, contents, evaluation, timestamp = fields
        request_ids.append(request_id)
        questions.append(question.encode())
        answers.append(answer)
        micros.append(tables.epoch_micros(timestamp))
        scores.append(evaluation.score)
        labels.append(events.normalize_labels(evaluation.labels or []))
        checks.append([(name, float(value)) for name, value in (evaluation.checks or {}).items()])
        suggestions.append((evaluation.suggestion or "").encode())
        doc_contents.extend(contents)
        for doc in event.docs:
            doc_ids.append("" if doc.id is None else str(doc.id))
            doc_scores.append(0.0 if doc.score is None else doc.score)
        doc_offsets.append(len(doc_ids))
    if not positions:
        return FastResult(None, [], undecided)

    answer_text, answer_ok = _json_texts(answers, max_chars)
    answer_ok = pc.and_(answer_ok, pc.match_substring_regex(answer_text, _NOT_BLANK))
    content_text, content_ok = _json_texts(doc_contents, max_chars)
    offsets = np.asarray(doc_offsets, dtype=np.int64)
    docs_ok = _all_per_list(content_ok, offsets)
    ok = pc.and_(answer_ok, pa.array(docs_ok))

    docs = pa.ListArray.from_arrays(
        pa.array(offsets.astype(np.int32)),
        pa.StructArray.from_arrays(
            [pa.array(doc_ids, pa.string()), content_text, pa.array(doc_scores, pa.float64())],
            fields=list(tables.DOC),
        ),
    )
    batch = pa.RecordBatch.from_arrays(
        [
            pa.array(request_ids, pa.string()),
            pa.array(questions, pa.binary()).cast(pa.string()),
            answer_text,
            docs,
            pa.array(scores, pa.float64()),
            pa.array(labels, tables.RAW_EVENTS.field("labels").type),
            pa.array(checks, tables.CHECKS),
            pa.array(suggestions, pa.binary()).cast(pa.string()),
            pa.array(micros, pa.int64()).cast(tables.UTC_TIMESTAMP),
            pa.array([sources[p] for p in positions], pa.string()),
            pa.array([lines[p] for p in positions], pa.int64()),
        ],
        schema=tables.RAW_EVENTS,
    )
    if not pc.all(ok).as_py():
        keep = ok.to_pylist()
        undecided.extend(p for p, good in zip(positions, keep) if not good)
        undecided.sort()
        positions = [p for p, good in zip(positions, keep) if good]
        batch = batch.filter(ok)
    return FastResult(batch if batch.num_rows else None, positions, undecided)


def _small_fields(event: _Event, max_chars: int):
    """The short fields checked and normalized as `normalize_event` does; None when unsure."""
    for name in ("request_id", "question"):
        value = getattr(event, name)
        if len(value) > max_chars or not value.strip():
            return None
    evaluation = event.evaluation
    if math.isnan(evaluation.score) or not 0.0 <= evaluation.score <= 1.0:
        return None
    if evaluation.suggestion is not None and len(evaluation.suggestion) > max_chars:
        return None
    for doc in event.docs:
        if doc.score is not None and math.isnan(doc.score):
            return None
    answer = bytes(event.answer)
    contents = [bytes(doc.content) for doc in event.docs]
    if not all(text[:1] == b'"' for text in (answer, *contents)):  # a string, not null or a number
        return None
    timestamp = events.parse_timestamp(event.timestamp)
    return event.request_id.strip(), event.question.strip(), answer, contents, evaluation, timestamp


def _json_texts(literals: list[bytes], max_chars: int) -> tuple[pa.Array, pa.Array]:
    """JSON string literals as Arrow UTF-8 text, and whether each is valid and within the limit.

    A literal without a backslash is its text between the quotes; the few with escapes are
    decoded one by one.
    """
    valid = np.ones(len(literals), dtype=bool)
    escaped = [index for index, literal in enumerate(literals) if b"\\" in literal]
    for index in escaped:
        try:
            literals[index] = b'"' + orjson.loads(literals[index]).encode() + b'"'
        except (orjson.JSONDecodeError, UnicodeEncodeError):
            literals[index] = b'""'
            valid[index] = False
    text = pc.binary_slice(pa.array(literals, pa.binary()), 1, -1)
    try:
        strings = text.cast(pa.string())
    except pa.ArrowInvalid:  # some text is not valid UTF-8: find it, leave it to the rule book
        values = text.to_pylist()
        for index, value in enumerate(values):
            try:
                value.decode("utf-8")
            except UnicodeDecodeError:
                values[index] = b""
                valid[index] = False
        strings = pa.array(values, pa.binary()).cast(pa.string())
    # A text has at most as many characters as bytes: count characters only when it matters.
    offsets = np.frombuffer(strings.buffers()[1], dtype=np.int32)[strings.offset : strings.offset + len(strings) + 1]
    long = np.flatnonzero(np.diff(offsets) > max_chars)
    if len(long):
        valid[long] &= pc.utf8_length(strings.take(pa.array(long))).to_numpy(zero_copy_only=False) <= max_chars
    return strings, pa.array(valid)


def _all_per_list(flags: pa.Array, offsets: np.ndarray) -> np.ndarray:
    """For each list (given by offsets into `flags`), whether all its flags are true."""
    bad = (~flags.to_numpy(zero_copy_only=False)).astype(np.int64)
    bad_before = np.concatenate([[0], np.cumsum(bad)])
    return bad_before[offsets[1:]] == bad_before[offsets[:-1]]
