"""Arrow schemas of the warehouse tables and the batch transforms between them.

The schemas are the documented contract analysts read (README, "Parquet schemas"); the
`date` column comes from the Hive partition folder, not from the files.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

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


def raw_events_batch(events: Sequence[Mapping], sources: Sequence[str], lines: Sequence[int]) -> pa.RecordBatch:
    """Normalized events (from `events.normalize_event`) as a `RAW_EVENTS` batch."""
    micros = [
        int(e["timestamp"].timestamp()) * _EPOCH_US_PER_S + e["timestamp"].microsecond for e in events
    ]
    columns = [
        pa.array([e["request_id"] for e in events], pa.string()),
        pa.array([e["question"] for e in events], pa.string()),
        pa.array([e["answer"] for e in events], pa.string()),
        pa.array([e["docs"] for e in events], RAW_EVENTS.field("docs").type),
        pa.array([e["score"] for e in events], pa.float64()),
        pa.array([e["labels"] for e in events], RAW_EVENTS.field("labels").type),
        pa.array([e["checks"] for e in events], CHECKS),
        pa.array([e["suggestion"] for e in events], pa.string()),
        pa.array(micros, pa.int64()).cast(UTC_TIMESTAMP),
        pa.array(sources, pa.string()),
        pa.array(lines, pa.int64()),
    ]
    return pa.RecordBatch.from_arrays(columns, schema=RAW_EVENTS)


def rejected_batch(rows: Sequence[Mapping]) -> pa.RecordBatch:
    return pa.RecordBatch.from_pylist(list(rows), schema=REJECTED_EVENTS)


def annotate_batch(raw: pa.RecordBatch, settings: RuleSettings) -> pa.RecordBatch:
    """`RAW_EVENTS` -> `ANNOTATED_SAMPLES`; columns that pass through stay in Arrow."""
    questions = raw.column("question").to_pylist()
    all_labels = raw.column("labels").to_pylist()
    docs = raw.column("docs").to_pylist()
    labels = [rules.main_label(ls) for ls in all_labels]
    languages = [rules.instruction_language(q, settings.instruction_language) for q in questions]
    context = [rules.select_context(d, settings.top_k) for d in docs]
    instructions = [rules.correction_instruction(lb, lang) for lb, lang in zip(labels, languages)]
    label_array = pa.array(labels, pa.string())
    score = raw.column("score")
    columns = {
        "sample_id": pc.binary_join_element_wise(raw.column("request_id"), label_array, "_"),
        "request_id": raw.column("request_id"),
        "timestamp": raw.column("timestamp"),
        "question": raw.column("question"),
        "original_answer": raw.column("answer"),
        "label": label_array,
        "labels": raw.column("labels"),
        "language": pa.array(languages, pa.string()),
        "instruction": pa.array(instructions, pa.string()),
        "context_docs": pa.array(context, ANNOTATED_SAMPLES.field("context_docs").type),
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


def records_batch(
    annotated: pa.RecordBatch,
    settings: RuleSettings,
    strategy: CompletionStrategy,
    label_weights: Mapping[str, float],
) -> pa.RecordBatch:
    """`ANNOTATED_SAMPLES` -> `SFT_RECORDS`: prompt, completion, weights and export status."""
    rows = annotated.select(
        ["label", "language", "question", "instruction", "context_docs", "original_answer", "confidence"]
    ).to_pylist()
    reasons = [samples.filter_reason(row, settings) for row in rows]
    prompts = [samples.prompt_for(row, settings) for row in rows]
    to_complete = [i for i, reason in enumerate(reasons) if reason is None]
    outcomes = strategy.complete([rows[i] for i in to_complete], [prompts[i] for i in to_complete])
    completions: list[str | None] = [None] * len(rows)
    for i, outcome in zip(to_complete, outcomes):
        completions[i] = outcome.completion
        if outcome.completion is None:
            reasons[i] = outcome.failure_reason or "no_completion"
    exported = [reason is None for reason in reasons]
    columns = {
        "sample_id": annotated.column("sample_id"),
        "request_id": annotated.column("request_id"),
        "timestamp": annotated.column("timestamp"),
        "label": annotated.column("label"),
        "language": annotated.column("language"),
        "question": annotated.column("question"),
        "prompt": pa.array(prompts, pa.string()),
        "completion": pa.array(completions, pa.string()),
        "original_answer": annotated.column("original_answer"),
        "completion_strategy": pa.array([strategy.name if e else None for e in exported], pa.string()),
        "completion_model": pa.array([strategy.model if e else None for e in exported], pa.string()),
        "score": annotated.column("score"),
        "confidence": annotated.column("confidence"),
        "sample_weight": pa.array([samples.sample_weight_for(row, settings) for row in rows], pa.float64()),
        "label_weight": pa.array(
            [label_weights.get(row["label"]) if e else None for row, e in zip(rows, exported)], pa.float64()
        ),
        "status": pa.array([samples.EXPORTED if e else samples.FILTERED for e in exported], pa.string()),
        "filter_reason": pa.array(reasons, pa.string()),
    }
    return pa.RecordBatch.from_arrays(list(columns.values()), schema=SFT_RECORDS)


JSONL_SOURCE_COLUMNS = [name for name in samples.JSONL_FIELDS if name != "date"]


def jsonl_chunk(records: pa.RecordBatch, day: str) -> bytes:
    """The exported records of a `SFT_RECORDS` batch as JSON Lines (UTF-8, Chinese readable)."""
    exported = records.filter(pc.equal(records.column("status"), samples.EXPORTED))
    if exported.num_rows == 0:
        return b""
    columns = [exported.column(name).to_pylist() for name in JSONL_SOURCE_COLUMNS]
    lines = []
    for values in zip(*columns):
        record = dict(zip(JSONL_SOURCE_COLUMNS, values))
        lines.append(orjson.dumps(samples.jsonl_record(record, day)))
    return b"\n".join(lines) + b"\n"
