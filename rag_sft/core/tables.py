"""Arrow schemas of the warehouse tables and the batch transforms between them.

The schemas are the documented contract analysts read (README, "Parquet schemas"); the
`date` column comes from the Hive partition folder, not from the files.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from rag_sft.core import rules, samples
from rag_sft.core.completion import CompletionStrategy
from rag_sft.core.rules import RuleSettings

DOC = pa.struct([("id", pa.string()), ("content", pa.string()), ("score", pa.float64())])
CHECKS = pa.map_(pa.string(), pa.float64())
UTC_TIMESTAMP = pa.timestamp("us", tz="UTC")

RAW_EVENTS = pa.schema(
    [
        ("request_id", pa.string()),
        ("question", pa.string()),
        ("answer", pa.string()),
        ("docs", pa.list_(DOC)),
        ("score", pa.float64()),
        ("labels", pa.list_(pa.string())),
        ("checks", CHECKS),
        ("suggestion", pa.string()),
        ("timestamp", UTC_TIMESTAMP),
        ("source", pa.string()),
        ("source_line", pa.int64()),
    ]
)

REJECTED_EVENTS = pa.schema(
    [
        ("source", pa.string()),
        ("source_line", pa.int64()),
        ("outcome", pa.string()),  # "rejected" (bad input) or "duplicate" (request_id seen before)
        ("reason", pa.string()),
        ("detail", pa.string()),
        ("request_id", pa.string()),
        ("raw_text", pa.string()),
    ]
)

ANNOTATED_SAMPLES = pa.schema(
    [
        ("sample_id", pa.string()),
        ("request_id", pa.string()),
        ("timestamp", UTC_TIMESTAMP),
        ("question", pa.string()),
        ("original_answer", pa.string()),
        ("label", pa.string()),
        ("labels", pa.list_(pa.string())),
        ("language", pa.string()),
        ("instruction", pa.string()),
        ("context_docs", pa.list_(DOC)),
        ("score", pa.float64()),
        ("confidence", pa.float64()),
        ("suggestion", pa.string()),
        ("checks", CHECKS),
    ]
)

SFT_RECORDS = pa.schema(
    [
        ("sample_id", pa.string()),
        ("request_id", pa.string()),
        ("timestamp", UTC_TIMESTAMP),
        ("label", pa.string()),
        ("language", pa.string()),
        ("question", pa.string()),
        ("prompt", pa.string()),
        ("completion", pa.string()),
        ("original_answer", pa.string()),
        ("completion_strategy", pa.string()),
        ("completion_model", pa.string()),
        ("score", pa.float64()),
        ("confidence", pa.float64()),
        ("sample_weight", pa.float64()),
        ("label_weight", pa.float64()),
        ("status", pa.string()),  # "exported" or "filtered"
        ("filter_reason", pa.string()),
    ]
)

_EPOCH_US_PER_S = 1_000_000


def _utf8(texts: list[str]) -> pa.Array:
    """Python text to an Arrow string column; encoding first is several times faster than
    letting pyarrow convert non-ASCII str objects one by one."""
    return pa.array([text.encode() for text in texts], pa.binary()).cast(pa.string())


def raw_events_batch(events: Sequence[Mapping], sources: Sequence[str], lines: Sequence[int]) -> pa.RecordBatch:
    """Normalized events (from `events.normalize_event`) as a `RAW_EVENTS` batch."""
    micros = [
        int(e["timestamp"].timestamp()) * _EPOCH_US_PER_S + e["timestamp"].microsecond for e in events
    ]
    doc_ids: list[str] = []
    doc_contents: list[str] = []
    doc_scores: list[float] = []
    offsets = [0]
    for e in events:
        for doc in e["docs"]:
            doc_ids.append(doc["id"])
            doc_contents.append(doc["content"])
            doc_scores.append(doc["score"])
        offsets.append(len(doc_ids))
    docs = pa.ListArray.from_arrays(
        pa.array(offsets, pa.int32()),
        pa.StructArray.from_arrays(
            [pa.array(doc_ids, pa.string()), _utf8(doc_contents), pa.array(doc_scores, pa.float64())],
            fields=list(DOC),
        ),
    )
    columns = [
        pa.array([e["request_id"] for e in events], pa.string()),
        _utf8([e["question"] for e in events]),
        _utf8([e["answer"] for e in events]),
        docs,
        pa.array([e["score"] for e in events], pa.float64()),
        pa.array([e["labels"] for e in events], RAW_EVENTS.field("labels").type),
        pa.array([e["checks"] for e in events], CHECKS),
        _utf8([e["suggestion"] for e in events]),
        pa.array(micros, pa.int64()).cast(UTC_TIMESTAMP),
        pa.array(sources, pa.string()),
        pa.array(lines, pa.int64()),
    ]
    return pa.RecordBatch.from_arrays(columns, schema=RAW_EVENTS)


def rejected_batch(rows: Sequence[Mapping]) -> pa.RecordBatch:
    return pa.RecordBatch.from_pylist(list(rows), schema=REJECTED_EVENTS)


def top_k_docs(docs: pa.ListArray, k: int) -> pa.ListArray:
    """Rule 2 over a whole column: each list's `k` docs by score, highest first, ties in order."""
    lengths = pc.list_value_length(docs).fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
    flat = docs.flatten()
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    parent = np.repeat(np.arange(len(lengths)), lengths)
    position = np.arange(len(flat)) - np.repeat(starts, lengths)
    scores = flat.field("score").fill_null(0.0).to_numpy(zero_copy_only=False)
    order = np.lexsort((position, -scores, parent))
    keep = order[position < k]  # `order` keeps each list's rows together, so rank == position
    kept_lengths = np.minimum(lengths, k)
    offsets = np.concatenate([[0], np.cumsum(kept_lengths)]).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), flat.take(pa.array(keep)), type=docs.type)


def annotate_batch(raw: pa.RecordBatch, settings: RuleSettings) -> pa.RecordBatch:
    """`RAW_EVENTS` -> `ANNOTATED_SAMPLES`; long texts never leave Arrow."""
    labels = [rules.main_label(ls) for ls in raw.column("labels").to_pylist()]
    languages = [rules.instruction_language(q, settings.instruction_language) for q in raw.column("question").to_pylist()]
    instructions = [rules.correction_instruction(lb, lang) for lb, lang in zip(labels, languages)]
    label_array = pa.array(labels, pa.string())
    score = raw.column("score")
    columns = {
        "sample_id": pc.binary_join_element_wise(raw.column("request_id"), label_array, rules.SAMPLE_ID_SEPARATOR),
        "request_id": raw.column("request_id"),
        "timestamp": raw.column("timestamp"),
        "question": raw.column("question"),
        "original_answer": raw.column("answer"),
        "label": label_array,
        "labels": raw.column("labels"),
        "language": pa.array(languages, pa.string()),
        "instruction": pa.array(instructions, pa.string()),
        "context_docs": top_k_docs(raw.column("docs"), settings.top_k),
        "score": score,
        "confidence": pc.min_element_wise(pc.multiply(score, settings.confidence_factor), 1.0),
        "suggestion": raw.column("suggestion"),
        "checks": raw.column("checks"),
    }
    return pa.RecordBatch.from_arrays(list(columns.values()), schema=ANNOTATED_SAMPLES)


def exported_label_counts(annotated: pa.RecordBatch, settings: RuleSettings) -> dict[str, int]:
    """Label counts of the samples of a batch that pass the confidence filter."""
    keep = pc.greater_equal(annotated.column("confidence"), settings.min_confidence)
    counts = pc.value_counts(pc.filter(annotated.column("label"), keep))
    return {item["values"].as_py(): item["counts"].as_py() for item in counts}


def _as_bytes(array: pa.Array) -> list[bytes | None]:
    """UTF-8 bytes of a string column: no decoding into Python text."""
    return array.cast(pa.binary()).to_pylist()


def prompts_batch(annotated: pa.RecordBatch, settings: RuleSettings) -> pa.Array:
    """Rule 5 over a batch, assembled from UTF-8 bytes (`rules.join_prompt`)."""
    docs = annotated.column("context_docs")
    lengths = pc.list_value_length(docs).fill_null(0).to_numpy(zero_copy_only=False)
    texts = _as_bytes(pc.utf8_slice_codeunits(docs.flatten().field("content"), 0, settings.doc_max_chars))
    questions = _as_bytes(annotated.column("question"))
    instructions = _as_bytes(annotated.column("instruction"))
    languages = annotated.column("language").to_pylist()
    prompts = []
    start = 0
    for question, instruction, language, length in zip(questions, instructions, languages, lengths):
        prompts.append(rules.join_prompt(question, texts[start : start + length], instruction, language))
        start += length
    return pa.array(prompts, pa.binary()).cast(pa.string())


def records_batch(
    annotated: pa.RecordBatch,
    settings: RuleSettings,
    strategy: CompletionStrategy,
    label_weights: Mapping[str, float],
) -> pa.RecordBatch:
    """`ANNOTATED_SAMPLES` -> `SFT_RECORDS`: prompt, completion, weights and export status."""
    confidence_values = annotated.column("confidence")
    eligible = pc.greater_equal(confidence_values, settings.min_confidence)
    reasons: list[str | None] = [None if ok else rules.LOW_CONFIDENCE for ok in eligible.to_pylist()]
    prompts = prompts_batch(annotated, settings)

    eligible_rows = [i for i, reason in enumerate(reasons) if reason is None]
    # Where each row's completion sits in the strategy's output; null for filtered rows, so
    # `take` scatters the completions back without copying their text through Python.
    positions: list[int | None] = [None] * annotated.num_rows
    completions = pa.nulls(annotated.num_rows, pa.string())
    if eligible_rows:
        index = pa.array(eligible_rows, pa.int64())
        outcome = strategy.complete(annotated.take(index), prompts.take(index))
        missing = pc.is_null(outcome.completions).to_pylist()
        for position, (row, failure) in enumerate(zip(eligible_rows, outcome.failure_reasons)):
            positions[row] = position
            if missing[position]:
                reasons[row] = failure or "no_completion"
        completions = outcome.completions.take(pa.array(positions, pa.int64()))
    exported = [reason is None for reason in reasons]
    labels = annotated.column("label").to_pylist()
    sample_weights = [
        rules.sample_weight(c, settings.weight_baseline, settings.weight_below_baseline, settings.weight_slope, settings.max_sample_weight)
        for c in confidence_values.to_pylist()
    ]
    columns = {
        "sample_id": annotated.column("sample_id"),
        "request_id": annotated.column("request_id"),
        "timestamp": annotated.column("timestamp"),
        "label": annotated.column("label"),
        "language": annotated.column("language"),
        "question": annotated.column("question"),
        "prompt": prompts,
        "completion": completions,
        "original_answer": annotated.column("original_answer"),
        "completion_strategy": pa.array([strategy.name if e else None for e in exported], pa.string()),
        "completion_model": pa.array([strategy.model if e else None for e in exported], pa.string()),
        "score": annotated.column("score"),
        "confidence": confidence_values,
        "sample_weight": pa.array(sample_weights, pa.float64()),
        "label_weight": pa.array([label_weights.get(lb) if e else None for lb, e in zip(labels, exported)], pa.float64()),
        "status": pa.array([samples.EXPORTED if e else samples.FILTERED for e in exported], pa.string()),
        "filter_reason": pa.array(reasons, pa.string()),
    }
    return pa.RecordBatch.from_arrays(list(columns.values()), schema=SFT_RECORDS)


JSONL_SOURCE_COLUMNS = [name for name in samples.JSONL_FIELDS if name != "date"]
_JSON_CONTROL = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f]")


def json_string(value: bytes | None) -> bytes:
    """A UTF-8 string as a JSON string literal, non-ASCII left readable (as orjson writes it)."""
    if value is None:
        return b"null"
    if _JSON_CONTROL.search(value):  # rare control characters: let orjson escape them
        return orjson.dumps(value.decode())
    escaped = value.replace(b"\\", b"\\\\").replace(b'"', b'\\"')
    return b'"' + escaped.replace(b"\n", b"\\n").replace(b"\r", b"\\r").replace(b"\t", b"\\t") + b'"'


def jsonl_chunk(records: pa.RecordBatch, day: str) -> bytes:
    """The exported records of a `SFT_RECORDS` batch as JSON Lines (UTF-8, Chinese readable).

    Fields in `samples.JSONL_FIELDS` order; strings are escaped straight from Arrow's UTF-8.
    """
    exported = records.filter(pc.equal(records.column("status"), samples.EXPORTED))
    if exported.num_rows == 0:
        return b""
    day_json = json_string(day.encode())
    encoded = []
    for name in samples.JSONL_FIELDS:
        if name == "date":
            values = [day_json] * exported.num_rows
        elif pa.types.is_string(exported.schema.field(name).type):
            values = [json_string(v) for v in _as_bytes(exported.column(name))]
        else:
            values = [orjson.dumps(v) for v in exported.column(name).to_pylist()]
        key = orjson.dumps(name)
        encoded.append([key + b":" + v for v in values])
    return b"".join(b"{" + b",".join(fields) + b"}\n" for fields in zip(*encoded))
