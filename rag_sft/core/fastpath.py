"""The fast path of ingestion: well-formed JSON lines straight to `RAW_EVENTS` Arrow columns.

`events.normalize_event` is the rule book; this module only speeds up the common case. msgspec
checks the types while decoding; the texts stay JSON string literals (UTF-8 bytes) that Arrow
unescapes, validates and measures column-wise, and timestamps in the usual ISO 8601 shape are
parsed by Arrow too. Everything the fast path is not sure about (any type error, blank,
padded or oversized text, bad UTF-8, a timestamp in an unusual shape, fields outside the
schema that might nest too deep) is handed back to the rule book, which then gives the
authoritative reason. Accepted by the fast path therefore always means accepted by
`normalize_event`, with the same normalized values (tested).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import msgspec
import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from rag_sft.core import events, tables

_NULL = msgspec.Raw(b"null")


class _Doc(msgspec.Struct, gc=False):
    content: msgspec.Raw  # a JSON string literal, checked and unescaped in Arrow
    id: str | int | None = None
    score: float | None = None


class _Evaluation(msgspec.Struct, gc=False):
    score: float
    labels: list[str] | None = None
    checks: dict[str, float | None] | None = None  # a null check is dropped, as the rule book does
    suggestion: msgspec.Raw = _NULL


class _Event(msgspec.Struct, gc=False):
    request_id: msgspec.Raw
    question: msgspec.Raw
    answer: msgspec.Raw
    docs: list[_Doc]
    evaluation: _Evaluation
    timestamp: str


# The same event with only the schema's fields, so its nesting is bounded by these types (a Raw
# field that is not a string literal is never accepted here). Other fields are skipped by the
# decoder above, with no bound on their nesting: a line that has them is decoded again by it
# only once its brackets show it cannot nest deeper than the rule book allows.
class _ExactDoc(_Doc, forbid_unknown_fields=True):
    pass


class _ExactEvaluation(_Evaluation, forbid_unknown_fields=True):
    pass


class _ExactEvent(_Event, forbid_unknown_fields=True):
    docs: list[_ExactDoc]
    evaluation: _ExactEvaluation


_EXACT_DECODER = msgspec.json.Decoder(_ExactEvent)
_LENIENT_DECODER = msgspec.json.Decoder(_Event)
_NOT_DECODED = (msgspec.MsgspecError, UnicodeDecodeError, RecursionError)

# What Python's str.strip() removes (str.isspace); RE2's \s lacks \v, \x1c-\x1f and Unicode spaces.
_BLANK = r"\t\n\x{0b}\x{0c}\r\x{1c}-\x{1f} \x{85}\x{a0}\x{1680}\x{2000}-\x{200a}\x{2028}\x{2029}\x{202f}\x{205f}\x{3000}"
_NOT_BLANK = f"[^{_BLANK}]"
_STRIPPED = (f"^{_NOT_BLANK}", f"{_NOT_BLANK}$")  # starts and ends with a non-blank character

# The timestamp shapes Arrow parses exactly as `datetime.fromisoformat` does; any other shape
# (or an impossible date such as 02-30) goes to the rule book.
_ISO_DATE_TIME = (
    r"^[12]\d{3}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])T([01]\d|2[0-3]):[0-5]\d:[0-5]\d(\.\d{1,6})?"
)
_WITH_OFFSET = _ISO_DATE_TIME + r"(Z|[+-]([01]\d|2[0-3]):[0-5]\d)$"
_WITHOUT_OFFSET = _ISO_DATE_TIME + "$"  # taken as UTC, as the rule book does
MICROS_PER_DAY = 86_400_000_000


@dataclass
class Decoded:
    """Lines decoded into typed events, with their timestamps read column-wise."""

    events: list[_Event]
    positions: list[int]  # the input position of each event
    failed: list[int]  # positions msgspec refused (not JSON, or not of the usual types)
    micros: np.ndarray  # int64 epoch microseconds (UTC) of each event's timestamp
    dated: np.ndarray  # bool: the timestamp was read here; False leaves it to the rule book


@dataclass
class FastResult:
    batch: pa.RecordBatch | None  # RAW_EVENTS rows the fast path accepted, in line order
    positions: list[int]  # the input position of each row of `batch`
    undecided: list[int]  # positions for the rule book to judge


def decode(raws: Sequence[bytes]) -> Decoded:
    decode_event = _EXACT_DECODER.decode
    decoded: list[_Event] = []
    positions: list[int] = []
    failed: list[int] = []
    for position, raw in enumerate(raws):
        try:
            decoded.append(decode_event(raw))
        except msgspec.ValidationError:  # another field (or a wrong type, which fails again)
            try:
                decoded.append(_decode_with_other_fields(raw))
            except _NOT_DECODED:
                failed.append(position)
                continue
        except _NOT_DECODED:
            failed.append(position)
            continue
        positions.append(position)
    micros, dated = parse_timestamps([event.timestamp for event in decoded])
    return Decoded(decoded, positions, failed, micros, dated)


def _decode_with_other_fields(raw) -> _Event:
    """Decode skipping the fields the schema does not name, whose nesting has no bound: a line
    with more opening brackets than MAX_JSON_DEPTH might nest deeper, and is left to the rule book."""
    text = bytes(raw)
    if text.count(b"{") + text.count(b"[") > events.MAX_JSON_DEPTH:
        raise msgspec.DecodeError("possibly nested too deep")
    return _LENIENT_DECODER.decode(text)


def decode_lines(raws: Sequence[bytes], sources: Sequence[str], lines: Sequence[int], max_chars: int) -> FastResult:
    """Accept what is certainly valid; every other position is returned as undecided."""
    decoded = decode(raws)
    result = accept(decoded, np.flatnonzero(decoded.dated), sources, lines, max_chars)
    undated = [decoded.positions[index] for index in np.flatnonzero(~decoded.dated)]
    result.undecided = sorted(decoded.failed + undated + result.undecided)
    return result


def accept(
    decoded: Decoded, chosen: np.ndarray, sources: Sequence[str], lines: Sequence[int], max_chars: int
) -> FastResult:
    """The chosen dated events (indices into `decoded.events`) as RAW_EVENTS rows, where every
    rule is certainly met; the positions of the others come back undecided."""
    chosen_events = [decoded.events[index] for index in chosen]
    positions = [decoded.positions[index] for index in chosen]
    if not chosen_events:
        return FastResult(None, [], [])
    evaluations = [event.evaluation for event in chosen_events]

    request_id, ok = _json_texts([event.request_id for event in chosen_events], max_chars)
    ok &= _stripped(request_id)
    question, question_ok = _json_texts([event.question for event in chosen_events], max_chars)
    ok &= question_ok & _stripped(question)
    answer, answer_ok = _json_texts([event.answer for event in chosen_events], max_chars)
    ok &= answer_ok  # empty or blank answers are valid
    suggestion_literals = [b'""' if e.suggestion == _NULL else e.suggestion for e in evaluations]
    suggestion, suggestion_ok = _json_texts(suggestion_literals, max_chars)
    ok &= suggestion_ok

    score = np.array([evaluation.score for evaluation in evaluations], dtype=np.float64)
    ok &= (score >= 0.0) & (score <= 1.0)

    doc_offsets = np.zeros(len(chosen_events) + 1, dtype=np.int64)
    np.cumsum([len(event.docs) for event in chosen_events], out=doc_offsets[1:])
    flat_docs = [doc for event in chosen_events for doc in event.docs]
    content, content_ok = _json_texts([doc.content for doc in flat_docs], max_chars)
    ok &= _all_per_list(content_ok, doc_offsets)
    doc_ids = ["" if doc.id is None else str(doc.id) for doc in flat_docs]
    doc_scores = pc.fill_null(pa.array([doc.score for doc in flat_docs], pa.float64()), 0.0)
    docs = pa.ListArray.from_arrays(
        pa.array(doc_offsets.astype(np.int32)),
        pa.StructArray.from_arrays([pa.array(doc_ids, pa.string()), content, doc_scores], fields=list(tables.DOC)),
    )

    batch = pa.RecordBatch.from_arrays(
        [
            request_id,
            question,
            answer,
            docs,
            pa.array(score),
            pa.array([events.normalize_labels(e.labels) if e.labels else [] for e in evaluations], tables.RAW_EVENTS.field("labels").type),
            pa.array([_scored_checks(e.checks) for e in evaluations], tables.CHECKS),
            suggestion,
            pa.array(decoded.micros[chosen]).cast(tables.UTC_TIMESTAMP),
            pa.array([sources[p] for p in positions], pa.string()),
            pa.array([lines[p] for p in positions], pa.int64()),
        ],
        schema=tables.RAW_EVENTS,
    )
    if ok.all():
        return FastResult(batch, positions, [])
    undecided = [p for p, good in zip(positions, ok) if not good]
    positions = [p for p, good in zip(positions, ok) if good]
    batch = batch.filter(pa.array(ok))
    return FastResult(batch if batch.num_rows else None, positions, undecided)


def parse_timestamps(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Epoch microseconds (UTC) of ISO 8601 texts in the usual shapes, and which were read."""
    micros = np.zeros(len(texts), dtype=np.int64)
    dated = np.zeros(len(texts), dtype=bool)
    column = pa.array(texts, pa.string())
    for shape, arrow_type in ((_WITH_OFFSET, tables.UTC_TIMESTAMP), (_WITHOUT_OFFSET, pa.timestamp("us"))):
        indices = np.flatnonzero(pc.match_substring_regex(column, shape).to_numpy(zero_copy_only=False))
        if not len(indices):
            continue
        try:
            micros[indices] = column.take(pa.array(indices)).cast(arrow_type).cast(pa.int64()).to_numpy()
            dated[indices] = True
        except pa.ArrowInvalid:  # an impossible date (02-30) among them: read these one by one
            for index in indices:
                try:
                    micros[index] = tables.epoch_micros(events.parse_timestamp(texts[index]))
                    dated[index] = True
                except events.Rejection:
                    pass
    return micros, dated


def _json_texts(literals: list, max_chars: int) -> tuple[pa.Array, np.ndarray]:
    """JSON string literals (msgspec.Raw or bytes) as Arrow UTF-8 text, and whether each was a
    string, valid UTF-8 and within the limit (others come back as empty text, flagged False).

    The literals are copied once into one buffer; one without a backslash is its text between
    the quotes, the few with escapes are decoded one by one.
    """
    offsets = np.zeros(len(literals) + 1, dtype=np.int64)
    np.cumsum(np.fromiter(map(len, literals), dtype=np.int64, count=len(literals)), out=offsets[1:])
    data = b"".join(literals)
    column = pa.Array.from_buffers(pa.large_binary(), len(literals), [None, pa.py_buffer(offsets), pa.py_buffer(data)])
    data_bytes = np.frombuffer(data, dtype=np.uint8)
    valid = data_bytes[offsets[:-1]] == ord('"')  # a string, not null or a number
    escaped = np.unique(np.searchsorted(offsets, np.flatnonzero(data_bytes == ord("\\")), side="right") - 1)
    repaired: dict[int, bytes] = {int(index): b'""' for index in np.flatnonzero(~valid)}
    for index in escaped[valid[escaped]]:
        try:
            repaired[int(index)] = b'"' + orjson.loads(bytes(literals[index])).encode() + b'"'
        except (orjson.JSONDecodeError, UnicodeEncodeError):
            repaired[int(index)] = b'""'
            valid[index] = False
    if repaired:
        mask = np.zeros(len(literals), dtype=bool)
        mask[list(repaired)] = True
        replacements = pa.array([repaired[index] for index in sorted(repaired)], pa.large_binary())
        column = pc.replace_with_mask(column, pa.array(mask), replacements)
    text = pc.binary_slice(column, 1, -1)
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
        strings = pa.array(values, pa.large_binary()).cast(pa.string())
    # A text has at most as many characters as bytes: count characters only when it matters.
    offsets = np.frombuffer(strings.buffers()[1], dtype=np.int32)[strings.offset : strings.offset + len(strings) + 1]
    long = np.flatnonzero(np.diff(offsets) > max_chars)
    if len(long):
        valid[long] &= pc.utf8_length(strings.take(pa.array(long))).to_numpy(zero_copy_only=False) <= max_chars
    return strings, valid


def _scored_checks(checks: dict | None) -> dict:
    if not checks:
        return {}
    if None in checks.values():
        return {name: value for name, value in checks.items() if value is not None}
    return checks


def _stripped(texts: pa.Array) -> np.ndarray:
    """Whether each text is non-blank and unchanged by str.strip()."""
    starts, ends = (pc.match_substring_regex(texts, pattern).to_numpy(zero_copy_only=False) for pattern in _STRIPPED)
    return starts & ends


def _all_per_list(flags: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """For each list (given by offsets into `flags`), whether all its flags are true."""
    bad_before = np.concatenate([[0], np.cumsum(~flags)])
    return bad_before[offsets[1:]] == bad_before[offsets[:-1]]
