"""Erasure on request (docs/spec.md, "Rule 14: Privacy"): which rows and lines hold an erased request, free of I/O.

An erased request_id is looked for where each artefact keeps it: the `request_id` column of the
Parquet tables, the `request_id` field of the record files (daily JSONL, preference pairs, the
splits of a training dataset), and, for a dead-letter row whose request_id could not be read,
its raw text (the id as a JSON string, quotes included, so `req-1` does not match `req-10`).
Ids are compared stripped, as ingest strips them: `" req-1 "` in a line is request req-1.
Trainer exports carry no request_id: their lines follow the records file line for line (both
are the exported rows in order), so they lose the same line numbers.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence

import orjson
import pyarrow as pa
import pyarrow.compute as pc

from rag_sft.core.ingest import IngestBatch, IngestCounts

ERASED = "erased"  # the ingest outcome of an event whose request_id is in the erasure ledger

# Per table, the counts of its materialization metadata an erased row was part of: those every
# row counts under, and those by the value of one column.
OUTCOME_KEYS: Mapping[str, tuple[tuple[str, ...], str | None, Mapping[str, str]]] = {
    "raw_events": (("accepted",), None, {}),
    "rejected_events": ((), "outcome", {"rejected": "rejected", "duplicate": "duplicates"}),
    "annotated_samples": ((), None, {}),
    "embedding_pairs": ((), None, {}),
    "retrieval_gaps": ((), None, {}),
    "sft_records": (
        ("accepted",),
        "status",
        {"exported": "exported", "filtered": "filtered", "held_back": "held_back"},
    ),
}


def request_ids(values: Iterable[str]) -> list[str]:
    """The ids asked for, stripped (as ingest strips them), blanks dropped, each once, in order."""
    return list(dict.fromkeys(value.strip() for value in values if value and value.strip()))


# Whitespace around an id inside its JSON string: as typed, or escaped (ingest strips it off).
_PADDING = r"(?:\s|\\[tnrf])*"


def id_pattern(ids: Iterable[str]) -> re.Pattern[bytes] | None:
    """The ids as they appear in a JSON line: each a JSON string (quotes included, so `req-1`
    does not match `req-10`), with or without whitespace around the id inside the quotes."""
    forms = [re.escape(orjson.dumps(request_id)[1:-1]) for request_id in ids]
    return re.compile(b'"' + _PADDING.encode() + b"(?:" + b"|".join(forms) + b")" + _PADDING.encode() + b'"') if forms else None


def erased_mask(batch: pa.RecordBatch | pa.Table, ids: pa.Array, named: re.Pattern[bytes] | None) -> pa.Array:
    """True for the rows of an erased request: its request_id (stripped: a dead-letter row
    written before ingest stripped them keeps the spaces), or for a row without one (a
    dead-letter line whose id could not be read) its raw text naming the id."""
    request_id = batch.column("request_id")
    mask = pc.fill_null(pc.is_in(pc.utf8_trim_whitespace(request_id), value_set=ids), False)
    if "raw_text" in batch.schema.names and named is not None:
        unnamed = pc.is_null(request_id)
        if pc.any(unnamed).as_py():
            texts = batch.column("raw_text").to_pylist()
            found = [
                bool(is_unnamed) and text is not None and named.search(text.encode()) is not None
                for is_unnamed, text in zip(unnamed.to_pylist(), texts)
            ]
            mask = pc.or_(mask, pa.array(found, pa.bool_()))
    return mask


def without_erased(
    batches: Iterable[IngestBatch], erased: Sequence[str], counts: IngestCounts
) -> Iterator[IngestBatch]:
    """Ingest's batches without the events of erased requests: each is moved from the outcome it
    was counted under (accepted, duplicate, rejected) to `erased`, so read = accepted +
    duplicates + rejected + erased, and no row of it is written anywhere (not even the dead
    letter: its raw text is what must go)."""
    ids = pa.array(erased, pa.string())
    named = id_pattern(erased)
    for batch in batches:
        if not erased:
            yield batch
            continue
        accepted, dead = batch.accepted, batch.dead_letter
        if accepted is not None:
            mask = erased_mask(accepted, ids, None)
            removed = pc.sum(mask).as_py() or 0
            if removed:
                counts.accepted -= removed
                counts.erased += removed
                accepted = accepted.filter(pc.invert(mask))
                accepted = accepted if accepted.num_rows else None
        if dead is not None:
            mask = erased_mask(dead, ids, named)
            gone = dead.filter(mask)
            for outcome, reason in zip(gone.column("outcome").to_pylist(), gone.column("reason").to_pylist()):
                if outcome == "duplicate":
                    counts.duplicates -= 1
                else:
                    counts.rejected -= 1
                    counts.reject_reasons[reason] -= 1
                    if not counts.reject_reasons[reason]:
                        del counts.reject_reasons[reason]
                counts.erased += 1
            if gone.num_rows:
                dead = dead.filter(pc.invert(mask))
                dead = dead if dead.num_rows else None
        yield IngestBatch(accepted, dead)


def removed_counts(table: str, removed: pa.Table) -> Counter:
    """The erased rows of a partition by the metadata counts each was part of."""
    every_row, column, by_value = OUTCOME_KEYS[table]
    counts = Counter({key: removed.num_rows for key in every_row})
    if column:
        counts.update(by_value[value] for value in removed.column(column).to_pylist() if value in by_value)
    return +counts


def counts_after_erasure(previous: Mapping[str, object], removed_rows: int, removed: Counter) -> dict[str, int]:
    """The counts of a partition's latest materialization once `removed_rows` rows are erased
    from it: each count loses its rows, `erased` gains them (so a day's counts still reconcile),
    `dagster/row_count` is the rows left."""
    updated = {key: int(previous[key]) - n for key, n in removed.items() if isinstance(previous.get(key), int)}
    row_count = previous.get("dagster/row_count")
    if isinstance(row_count, int):
        updated["dagster/row_count"] = row_count - removed_rows
    updated[ERASED] = int(previous.get(ERASED) or 0) + removed_rows
    return updated


def record_lines_to_drop(data: bytes, erased: set[str]) -> list[int]:
    """Line numbers (0-based) of a record file whose `request_id` is erased."""
    return [n for n, line in enumerate(data.splitlines()) if line.strip() and _request_id(orjson.loads(line)) in erased]


def _request_id(record: dict) -> str | None:
    value = record.get("request_id")
    return value.strip() if isinstance(value, str) else None


def drop_lines(data: bytes, drop: Iterable[int]) -> bytes:
    """`data` without the lines numbered in `drop` (each kept line ends with a newline, as written)."""
    gone = set(drop)
    return b"".join(line + b"\n" for n, line in enumerate(data.splitlines()) if n not in gone)
