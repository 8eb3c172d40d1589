"""Arrow schemas of the warehouse tables and the batch transforms between them.

The schemas are the documented contract analysts read (docs/outputs.md, "Parquet schemas"); the
`date` column comes from the Hive partition folder, not from the files.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from rag_sft.core import pii, rules, samples, triage
from rag_sft.core.columns import lookup_by_label
from rag_sft.core.completion import CompletionStrategy
from rag_sft.core.llm import STRATEGY as STRATEGY_LLM
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

# What annotate_batch makes; annotated_samples adds the triage columns (core/triage.py).
ANNOTATED_BASE = pa.schema(
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

# docs/spec.md, "Rule 15: Triage": the route, why, who judged the context, each context passage's
# similarity to the question and its role in embedding pairs (docs/retriever.md, "Routes").
ANNOTATED_SAMPLES = pa.schema([*ANNOTATED_BASE, *triage.TRIAGE_FIELDS])

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
        ("status", pa.string()),  # "exported", "filtered" or "held_back"
        ("filter_reason", pa.string()),
        ("held_back_by", pa.string()),  # the failed checks of a held-back day, comma-separated
        ("duplicate_of", pa.string()),  # a near_duplicate's kept sample_id (of this day or an earlier one)
        ("route", pa.string()),  # the triage route (core/triage.py); null when the sample was never triaged
    ]
)

# Long, mostly unique texts: Parquet writes them plain, without dictionaries or min/max statistics.
FREE_TEXT = frozenset(
    {
        "question",
        "answer",
        "docs.list.element.content",
        "suggestion",
        "original_answer",
        "context_docs.list.element.content",
        "prompt",
        "completion",
        "detail",
        "raw_text",
    }
)

_EPOCH_US_PER_S = 1_000_000


def epoch_micros(timestamp) -> int:
    """An aware datetime as microseconds since the epoch (the int64 behind `UTC_TIMESTAMP`)."""
    return int(timestamp.timestamp()) * _EPOCH_US_PER_S + timestamp.microsecond


def _utf8(texts: list[str]) -> pa.Array:
    """Python text to an Arrow string column; encoding first is several times faster than
    letting pyarrow convert non-ASCII str objects one by one."""
    return pa.array([text.encode() for text in texts], pa.binary()).cast(pa.string())


def raw_events_batch(events: Sequence[Mapping], sources: Sequence[str], lines: Sequence[int]) -> pa.RecordBatch:
    """Normalized events (from `events.normalize_event`) as a `RAW_EVENTS` batch."""
    micros = [epoch_micros(e["timestamp"]) for e in events]
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


def main_labels(labels: pa.ListArray) -> pa.Array:
    """Rule 1 over a column of (normalized) label lists."""
    lengths = pc.list_value_length(labels).fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    flat = labels.flatten()
    unknown = len(rules.LABEL_PRIORITY)
    rank = pc.index_in(flat, value_set=pa.array(rules.LABEL_PRIORITY)).fill_null(unknown)
    rank = rank.to_numpy(zero_copy_only=False).astype(np.int64)
    nonempty = lengths > 0
    best = np.full(len(lengths), unknown, dtype=np.int64)
    if nonempty.any():
        best[nonempty] = np.minimum.reduceat(rank, starts[nonempty])
    # Known label -> the best one; only unknown labels -> the first; none -> unspecified.
    choices = pa.array([*rules.LABEL_PRIORITY, rules.UNSPECIFIED])
    label = choices.take(pa.array(np.where(nonempty, best, unknown)))
    if len(flat) and (nonempty & (best == unknown)).any():
        first = flat.take(pa.array(np.where(nonempty, starts, 0)))
        label = pc.if_else(pa.array(nonempty & (best == unknown)), first, label)
    return label


def question_languages(questions: pa.Array, setting: str) -> pa.Array:
    """Rule 3 over a column (`rules.question_language`, or the configured language). The grammar
    words are counted only in questions that mix Han and Latin text, the only ones they decide."""
    if setting != "auto":
        return pa.array([rules.instruction_language("", setting)] * len(questions), pa.string())
    han = pc.count_substring_regex(questions, rules.HAN_PATTERN).to_numpy(zero_copy_only=False)
    latin = pc.match_substring_regex(questions, rules.LATIN_PATTERN).to_numpy(zero_copy_only=False)
    chinese_words = np.zeros(len(questions), dtype=np.int64)
    english_words = np.zeros(len(questions), dtype=np.int64)
    mixed = np.flatnonzero((han > 0) & latin)
    if len(mixed):
        subset = questions.take(pa.array(mixed))
        chinese_words[mixed] = pc.count_substring_regex(subset, rules.CHINESE_GRAMMAR_PATTERN).to_numpy(zero_copy_only=False)
        english_words[mixed] = pc.count_substring_regex(subset, rules.ENGLISH_GRAMMAR_PATTERN).to_numpy(zero_copy_only=False)
    chinese = rules.reads_as_chinese(han, chinese_words, english_words)
    return pa.array(np.where(chinese, rules.ZH, rules.EN), pa.string())


def annotate_batch(raw: pa.RecordBatch, settings: RuleSettings) -> pa.RecordBatch:
    """`RAW_EVENTS` -> `ANNOTATED_SAMPLES`, column at a time."""
    label = main_labels(raw.column("labels"))
    language = question_languages(raw.column("question"), settings.instruction_language)
    score = raw.column("score")
    columns = {
        "sample_id": pc.binary_join_element_wise(raw.column("request_id"), label, rules.SAMPLE_ID_SEPARATOR),
        "request_id": raw.column("request_id"),
        "timestamp": raw.column("timestamp"),
        "question": raw.column("question"),
        "original_answer": raw.column("answer"),
        "label": label,
        "labels": raw.column("labels"),
        "language": language,
        "instruction": lookup_by_label(label, language, rules.INSTRUCTIONS),
        "context_docs": top_k_docs(raw.column("docs"), settings.top_k),
        "score": score,
        "confidence": pc.min_element_wise(pc.multiply(score, settings.confidence_factor), 1.0),
        "suggestion": raw.column("suggestion"),
        "checks": raw.column("checks"),
    }
    return pa.RecordBatch.from_arrays(list(columns.values()), schema=ANNOTATED_BASE)


def with_triage(annotated: pa.RecordBatch, settings: triage.TriageSettings, similarity) -> pa.RecordBatch:
    """An `ANNOTATED_BASE` batch with its triage columns: an `ANNOTATED_SAMPLES` batch."""
    columns = triage.triage_columns(annotated, settings, similarity)
    return pa.RecordBatch.from_arrays(
        [*annotated.columns, *(columns[name] for name, _ in triage.TRIAGE_FIELDS)], schema=ANNOTATED_SAMPLES
    )


# Texts in ANNOTATED_SAMPLES that may hold personal data, besides the docs' content: users' texts
# and the labels (free text when the evaluator's label is not a known one).
PERSONAL_TEXTS = ("question", "original_answer", "suggestion", "label")


def annotate_and_redact(raw: pa.RecordBatch, settings: RuleSettings) -> tuple[pa.RecordBatch, Counter]:
    """`annotate_batch`, then personal data replaced by placeholders (rule 14) in every text a
    prompt, an LLM request or an export is made of, and a request_id or doc id holding personal
    data replaced by its pseudonym (`pii.pseudonym`), the sample_id made again from them; what
    was found, by kind."""
    annotated = annotate_batch(raw, settings)
    if not settings.redact_pii:
        return annotated, Counter()
    redacted, found = pii.redact_batch(
        annotated, PERSONAL_TEXTS, docs="context_docs", ids=("request_id",), label_lists=("labels",)
    )
    if found:
        sample_id = pc.binary_join_element_wise(redacted.column("request_id"), redacted.column("label"), rules.SAMPLE_ID_SEPARATOR)
        redacted = redacted.set_column(redacted.schema.get_field_index("sample_id"), "sample_id", sample_id)
    return redacted, found


# Samples a day's selection filters before completions: sample_id, reason, the kept sample_id.
SET_ASIDE = pa.schema([("sample_id", pa.string()), ("filter_reason", pa.string()), ("duplicate_of", pa.string())])


def without(batch: pa.RecordBatch, set_aside: pa.Table | None) -> pa.RecordBatch:
    """The rows of a batch (with `sample_id`) that are not set aside."""
    if set_aside is None or not set_aside.num_rows:
        return batch
    return batch.filter(pc.invert(pc.is_in(batch.column("sample_id"), value_set=set_aside.column("sample_id"))))


def exported_label_counts(annotated: pa.RecordBatch, settings: RuleSettings) -> dict[str, int]:
    """Label counts of the samples of a batch that pass the confidence filter (and triage)."""
    annotated = triage.for_sft(annotated)
    keep = pc.greater_equal(annotated.column("confidence"), settings.min_confidence)
    counts = pc.value_counts(pc.filter(annotated.column("label"), keep))
    return {item["values"].as_py(): item["counts"].as_py() for item in counts}


def prompts_batch(annotated: pa.RecordBatch, settings: RuleSettings) -> pa.Array:
    """Rule 5 over a batch, assembled by Arrow (`rules.build_prompt` is the row form)."""
    docs = annotated.column("context_docs")
    languages = annotated.column("language")
    lengths = pc.list_value_length(docs).fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    parent = np.repeat(np.arange(len(lengths)), lengths)
    number = np.arange(int(lengths.sum())) - np.repeat(starts, lengths)  # 0-based position in its list
    most = int(lengths.max()) if len(lengths) else 0
    language_index = pc.index_in(languages, value_set=pa.array(rules.LANGUAGES)).to_numpy(zero_copy_only=False)
    tags = pa.array([rules.DOC_TAG[language].format(i) for language in rules.LANGUAGES for i in range(1, most + 1)], pa.string())
    doc_tags = tags.take(pa.array(language_index[parent] * most + number)) if most else pa.array([], pa.string())
    texts = pc.utf8_slice_codeunits(docs.flatten().field("content"), 0, settings.doc_max_chars)
    tagged = pc.binary_join_element_wise(doc_tags, texts, " ")
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    joined_docs = pc.binary_join(pa.ListArray.from_arrays(pa.array(offsets), tagged), rules.PROMPT_SEPARATOR)
    joined_docs = pc.if_else(pa.array(lengths > 0), joined_docs, pa.scalar(None, pa.string()))  # none: no block
    headings = pa.array([rules.QUESTION_HEADING[language] for language in rules.LANGUAGES]).take(pa.array(language_index))
    question = pc.binary_join_element_wise(headings, annotated.column("question"), "\n")
    return pc.binary_join_element_wise(
        joined_docs, annotated.column("instruction"), question, rules.PROMPT_SEPARATOR, null_handling="skip"
    )


def sample_weights(confidence: pa.Array, settings: RuleSettings) -> pa.Array:
    """Rule 8 over a column, with the same floating-point steps as `rules.sample_weight`."""
    rising = pc.add(1.0, pc.multiply(settings.weight_slope, pc.subtract(confidence, settings.weight_baseline)))
    capped = pc.min_element_wise(rising, settings.max_sample_weight)
    return pc.if_else(pc.less(confidence, settings.weight_baseline), settings.weight_below_baseline, capped)


def records_batch(
    annotated: pa.RecordBatch,
    settings: RuleSettings,
    strategy: CompletionStrategy,
    label_weights: Mapping[str, float],
    set_aside: pa.Table | None = None,
) -> pa.RecordBatch:
    """`ANNOTATED_SAMPLES` -> `SFT_RECORDS`: prompt, completion, weights and export status.

    `set_aside` (`SET_ASIDE`) names samples the day's selection filters before any completion is
    written (`near_duplicate`); the confidence filter comes first.
    """
    rows = annotated.num_rows
    confidence = annotated.column("confidence")
    confident = pc.greater_equal(confidence, settings.min_confidence)
    aside_reason = duplicate_of = pa.nulls(rows, pa.string())
    if set_aside is not None and set_aside.num_rows:
        found = pc.index_in(annotated.column("sample_id"), value_set=set_aside.column("sample_id"))
        aside_reason = set_aside.column("filter_reason").combine_chunks().take(found)
        duplicate_of = set_aside.column("duplicate_of").combine_chunks().take(found)
    # Triage first (docs/spec.md, "Rule 15: Triage"): a retrieval or review route makes no SFT sample.
    route = annotated.column("route") if "route" in annotated.schema.names else pa.nulls(rows, pa.string())
    aside_reason = pc.coalesce(triage.sft_filter_reasons(route), aside_reason)
    eligible = pc.and_(confident, pc.is_null(aside_reason))
    prompts = prompts_batch(annotated, settings)
    completions = pa.nulls(rows, pa.string())
    failures = pa.nulls(rows, pa.string())
    models = pa.nulls(rows, pa.string())
    eligible_rows = np.flatnonzero(eligible.to_numpy(zero_copy_only=False))
    if len(eligible_rows):
        index = pa.array(eligible_rows)
        outcome = strategy.complete(annotated.take(index), prompts.take(index))
        # Scatter the strategy's answers back to their rows (null for filtered rows).
        position = np.full(rows, -1, dtype=np.int64)
        position[eligible_rows] = np.arange(len(eligible_rows))
        scatter = pa.array(position, mask=position < 0)
        completions = outcome.completions.take(scatter)
        if settings.redact_pii:  # an LLM's reply may repeat or invent personal data (rule 14)
            completions = pii.redact_column(completions, Counter())
        failures = pa.array(outcome.failure_reasons, pa.string()).take(scatter)
        models = outcome.models.take(scatter)
    missing = pc.and_(eligible, pc.is_null(completions))
    failures = pc.fill_null(failures, "missing")
    failure_reason = pc.if_else(
        pc.is_in(failures, value_set=pa.array(sorted(rules.FINAL_COMPLETION_FAILURES), pa.string())),
        failures,
        pc.binary_join_element_wise(rules.COMPLETION_FAILED_PREFIX, failures, ""),
    )
    reason = pc.if_else(
        confident,
        pc.if_else(eligible, pc.if_else(missing, failure_reason, pa.scalar(None, pa.string())), aside_reason),
        rules.LOW_CONFIDENCE,
    )
    exported = pc.is_null(reason)
    nothing = pa.scalar(None, pa.string())
    weight_keys = sorted(label_weights)
    label_weight = pa.array([label_weights[k] for k in weight_keys], pa.float64()).take(
        pc.index_in(annotated.column("label"), value_set=pa.array(weight_keys, pa.string()))
    )
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
        "completion_strategy": pc.if_else(exported, pa.scalar(strategy.name, pa.string()), nothing),
        "completion_model": pc.if_else(exported, models, nothing),
        "score": annotated.column("score"),
        "confidence": confidence,
        "sample_weight": sample_weights(confidence, settings),
        "label_weight": pc.if_else(exported, label_weight, pa.scalar(None, pa.float64())),
        "status": pc.if_else(exported, samples.EXPORTED, samples.FILTERED),
        "filter_reason": reason,
        "held_back_by": pa.nulls(rows, pa.string()),  # the day's verdict comes after every batch
        "duplicate_of": duplicate_of,
        "route": route,
    }
    return pa.RecordBatch.from_arrays(list(columns.values()), schema=SFT_RECORDS)


def held_back_batch(records: pa.RecordBatch, checks: Sequence[str]) -> pa.RecordBatch:
    """A `SFT_RECORDS` batch of a day held back by `checks`: its exported records become
    `held_back`, naming the checks; filtered ones keep their status and reason."""
    status = records.column("status")
    held = pc.equal(status, samples.EXPORTED)
    columns = {name: records.column(name) for name in records.schema.names}
    columns["status"] = pc.if_else(held, samples.HELD_BACK, status)
    columns["held_back_by"] = pc.if_else(held, ",".join(checks), pa.scalar(None, pa.string()))
    return pa.RecordBatch.from_arrays(list(columns.values()), schema=SFT_RECORDS)


JSONL_SOURCE_COLUMNS = [name for name in samples.JSONL_FIELDS if name != "date"]
_JSON_ESCAPES = ((b"\\", "\\\\"), (b'"', '\\"'), (b"\n", "\\n"), (b"\r", "\\r"), (b"\t", "\\t"))


def json_strings(values: pa.Array) -> pa.Array:
    """Each string as a JSON literal, non-ASCII left readable (as orjson writes it); null as null.

    Quotes, backslashes and the common whitespace escapes are replaced column-wide, each only
    when the column holds it; the rare value holding another control character is written by
    orjson itself.
    """
    offsets = np.frombuffer(values.buffers()[1], dtype=np.int32)[values.offset : values.offset + len(values) + 1]
    start, end = int(offsets[0]), int(offsets[-1])
    data = values.buffers()[2].slice(start, end - start) if end > start else pa.py_buffer(b"")
    text = data.to_pybytes()
    escaped = values
    for plain, escape in _JSON_ESCAPES:
        if plain in text:
            escaped = pc.replace_substring(escaped, plain.decode(), escape)
    literals = pc.binary_join_element_wise('"', escaped, '"', "")
    raw = np.frombuffer(data, dtype=np.uint8)
    controls = raw < 0x20  # numpy counts without holding the GIL; bytes.count would hold it
    if np.count_nonzero(controls) > sum(np.count_nonzero(raw == byte) for byte in (9, 10, 13)):
        odd = np.flatnonzero(controls & ~np.isin(raw, (9, 10, 13)))
        rows = np.unique(np.searchsorted(offsets - start, odd, side="right") - 1)
        by_orjson = [orjson.dumps(values[int(row)].as_py()).decode() for row in rows]
        mask = np.zeros(len(values), dtype=bool)
        mask[rows] = True
        literals = pc.replace_with_mask(literals, pa.array(mask), pa.array(by_orjson, pa.string()))
    return pc.fill_null(literals, "null")


def json_numbers(values: pa.Array) -> pa.Array:
    """Floats as JSON numbers, written as orjson writes them (shortest round-trip, 1.0 not 1)."""
    text = values.cast(pa.string())
    integral = pc.invert(pc.match_substring_regex(text, "[.eEn]"))  # no point, exponent, nan or inf
    text = pc.if_else(integral, pc.binary_join_element_wise(text, ".0", ""), text)
    return pc.fill_null(text, "null")


class JsonlChunk(NamedTuple):
    data: pa.Buffer  # the lines back to back (bytes-like: files and hashes take it as it is)
    lines: int


def jsonl_chunk(records: pa.RecordBatch, day: str) -> JsonlChunk:
    """The exported records of a `SFT_RECORDS` batch as JSON Lines (UTF-8, Chinese readable).

    Fields in `samples.JSONL_FIELDS` order; every line is assembled column-wise by Arrow.
    """
    exported = records.filter(pc.equal(records.column("status"), samples.EXPORTED))
    # Trainers load many days as one dataset, which needs each field's JSON type to be the same
    # in every file: a completion no model wrote (naive) says "" rather than null.
    model = exported.schema.get_field_index("completion_model")
    exported = exported.set_column(
        model, "completion_model", pc.fill_null(exported.column(model), samples.NO_COMPLETION_MODEL)
    )
    return _json_lines(exported, [(name, name) for name in samples.JSONL_FIELDS], day)


def preference_chunk(records: pa.RecordBatch, day: str) -> JsonlChunk:
    """Preference pairs (`samples.PREFERENCE_FIELDS`) of a `SFT_RECORDS` batch: the LLM's
    corrected answer is chosen over the answer the user got. Only exported records whose
    completion an LLM wrote and differs from a non-blank original answer make a pair."""
    if not pc.any(pc.equal(records.column("completion_strategy"), STRATEGY_LLM)).as_py():
        return JsonlChunk(pa.py_buffer(b""), 0)  # no corrected answers (the naive strategy's days)
    is_pair = pc.and_(
        pc.and_(
            pc.equal(records.column("status"), samples.EXPORTED),
            pc.equal(records.column("completion_strategy"), STRATEGY_LLM),
        ),
        pc.and_(
            pc.invert(pc.utf8_is_space(pc.fill_null(records.column("original_answer"), " "))),
            pc.not_equal(pc.utf8_trim_whitespace(records.column("completion")),
                         pc.utf8_trim_whitespace(records.column("original_answer"))),
        ),
    )
    pairs = records.filter(pc.fill_null(is_pair, False))
    return _json_lines(pairs, list(samples.PREFERENCE_FIELDS.items()), day)


def _json_lines(rows: pa.RecordBatch, fields: Sequence[tuple[str, str]], day: str) -> JsonlChunk:
    """One JSON object per row, (key, source column) in order; the key `date` is the day."""
    if rows.num_rows == 0:
        return JsonlChunk(pa.py_buffer(b""), 0)
    pieces: list = []
    for index, (name, column) in enumerate(fields):
        pieces.append(("{" if index == 0 else ",") + orjson.dumps(name).decode() + ":")
        if name == "date":
            pieces.append(orjson.dumps(day).decode())
        elif pa.types.is_string(rows.schema.field(column).type):
            pieces.append(json_strings(rows.column(column)))
        else:
            pieces.append(json_numbers(rows.column(column)))
    pieces.append("}\n")
    return line_chunk(pc.binary_join_element_wise(*pieces, ""), rows.num_rows)


def line_chunk(lines: pa.Array, count: int) -> JsonlChunk:
    """A string array of whole lines as one chunk: they sit back to back in its data buffer."""
    offsets = np.frombuffer(lines.buffers()[1], dtype=np.int32)[lines.offset : lines.offset + len(lines) + 1]
    return JsonlChunk(lines.buffers()[2].slice(int(offsets[0]), int(offsets[-1] - offsets[0])), count)
