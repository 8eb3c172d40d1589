"""Erasure in the warehouse, on a disk or an object store (`rag_sft.io.storage.location`): each artefact
that holds an erased request rewritten without it.

- Parquet partitions (`raw_events`, `rejected_events`, `annotated_samples`, `sft_records`,
  `embedding_pairs`, `retrieval_gaps`):
  the days holding an id are found from the `request_id` column alone (and, for dead-letter
  rows without one, their raw text); each such day is rewritten row group by row group through
  `PartitionWriter`, which replaces the day's file whole, so readers never see half a day.
- Record files (a day's export, a dataset version's days, a training dataset's splits): the
  records file loses the erased lines, its trainer exports the same line numbers, preference
  pairs their own erased lines; each file is replaced whole (`StagedFile`: a rename on a disk,
  so a version's hard link to the old file keeps its bytes until the version is rewritten too;
  one PUT on a store).
- A day's embedding pairs JSONL (FlagEmbedding's lines name no request): written again from
  its Parquet partition once that has lost the erased rows.
- The model registry: versions trained on a dataset version that held erased records are
  flagged (`trained_on_erased`, `erased_records`); they stay usable.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from rag_sft.core import erasure, llm, pairs, tables
from rag_sft.core.exports import FORMATS, file_name
from rag_sft.io.registry.model_registry import ModelRegistry
from rag_sft.io.storage.location import Location, listed_files, open_input, remote
from rag_sft.io.storage.warehouse import PART_FILE, PartitionWriter, StagedFile, partition_dir, row_groups

TABLES = ("raw_events", "rejected_events", "annotated_samples", "sft_records", "embedding_pairs", "retrieval_gaps")
RECORDS, PREFERENCES = "records.jsonl", "preferences.jsonl"
# A day's export folder (and a version's day): records file -> the files that follow it line for line.
EXPORT_FILES = {RECORDS: [file_name(name) for name in FORMATS], PREFERENCES: []}
# A training dataset's folder: each split and its trainer exports.
TRAINING_FILES = {f"{split}.jsonl": [file_name(name, split) for name in FORMATS] for split in ("train", "eval")}


def days_holding(table_dir: Location, erased: Sequence[str]) -> list[str]:
    """The days of a table with a row of an erased request, read column by column."""
    ids = pa.array(erased, pa.string())
    named = erasure.id_pattern(erased)
    days = []
    parts = listed_files(table_dir, (PART_FILE,)) if table_dir.is_dir() else {}
    for path in (path for path in parts if path.parent.name.startswith("date=")):
        with open_input(path) as handle:
            parquet = pq.ParquetFile(handle, pre_buffer=remote(path))
            table = parquet.read(columns=["request_id"])
            if "raw_text" in parquet.schema_arrow.names and table.column("request_id").null_count:
                table = parquet.read(columns=["request_id", "raw_text"])
        if pc.any(erasure.erased_mask(table, ids, named)).as_py():
            days.append(path.parent.name.removeprefix("date="))
    return days


def rewrite_partition(table_dir: Location, day: str, erased: Sequence[str], compression: str) -> pa.Table:
    """Rewrite the day without the erased rows (the file's own schema); returns those rows."""
    ids = pa.array(erased, pa.string())
    named = erasure.id_pattern(erased)
    groups = row_groups(table_dir, day)
    if groups:
        schema = groups[0].metadata.schema.to_arrow_schema()
    else:
        with open_input(partition_dir(table_dir, day) / PART_FILE) as handle:
            schema = pq.read_schema(handle)
    removed = []
    with PartitionWriter(table_dir, day, schema, compression, tables.FREE_TEXT) as writer:
        for group in groups:
            batch = group.read()
            mask = erasure.erased_mask(batch, ids, named)
            removed.append(batch.filter(mask))
            writer.write(batch.filter(pc.invert(mask)))
        writer.commit()
    return pa.Table.from_batches(removed, schema)


def rewrite_pairs_jsonl(table_dir: Location, day: str, jsonl: Location) -> None:
    """The day's FlagEmbedding JSONL again, from its (erased) embedding_pairs partition."""
    if not jsonl.is_file():
        return
    with StagedFile(jsonl) as staged:
        staged.write([pairs.jsonl_bytes(group.read()) for group in row_groups(table_dir, day)])
        staged.publish()


def erase_record_files(
    folder: Location, files: Mapping[str, Sequence[str]], erased: set[str], into: Location | None = None
) -> int:
    """Remove the erased records from the folder's record files and the same lines from the
    files following each, writing the changed files into `into` (by default over the old ones);
    returns the records removed (from the first records file: the others, such as preference
    pairs, repeat some of them). The followers are replaced before their records file, and a
    follower already shorter by the erased lines is left as it is: an erasure stopped between two
    files (a store down, a killed process) is finished by the next."""
    into = folder if into is None else into
    removed = 0
    for records_name, followers in files.items():
        records = folder / records_name
        if not records.is_file():
            continue
        data = records.read_bytes()
        drop = erasure.record_lines_to_drop(data, erased)
        if not drop:
            continue
        if records_name == next(iter(files)):
            removed += len(drop)
        count = len(data.splitlines())
        for name in (*followers, records_name):
            path = folder / name
            if not path.is_file():
                continue
            lines = path.read_bytes()
            if name != records_name:
                if len(lines.splitlines()) == count - len(drop):
                    continue
                if len(lines.splitlines()) != count:
                    raise ValueError(f"{path} does not follow {records} line for line: erase it by hand")
            with StagedFile(into / name) as staged:
                staged.write([erasure.drop_lines(lines, drop)])
                staged.publish()
    return removed


def erase_training_datasets(training_root: Location, erased: set[str], note: dict) -> dict[str, int]:
    """Each training dataset folder without the erased records, its manifest noting it, after
    its files; returns folder name -> records removed, for the folders that held any. A folder
    without a manifest (an upload to a store that stopped) loses the records too but gets no
    manifest: that would make it look finished."""
    rewritten = {}
    folders = sorted(training_root.iterdir()) if training_root.is_dir() else []
    for folder in (path for path in folders if not path.name.startswith(".") and path.is_dir()):
        # Each split on its own: their records are distinct, both count.
        removed = sum(erase_record_files(folder, {split: files}, erased) for split, files in TRAINING_FILES.items())
        if not removed:
            continue
        manifest_path = folder / "manifest.json"
        if manifest_path.is_file():
            manifest = json.loads(manifest_path.read_bytes())
            manifest["erasures"] = [*manifest.get("erasures", []), {**note, "records_removed": removed}]
            with StagedFile(manifest_path) as staged:
                staged.write([orjson.dumps(manifest, option=orjson.OPT_INDENT_2)])
                staged.publish()
        rewritten[folder.name] = removed
    return rewritten


def cache_keys(records: pa.Table, annotated: pa.Table | None, endpoint: str, settings: llm.LlmSettings) -> list[str]:
    """The LLM answer cache keys of erased samples, recomputed as the llm strategy computes them
    (`core/llm.py`) from the sample's prompt and the evaluator's feedback, with `settings`."""
    rows = annotated.select(["sample_id", "checks", "suggestion"]).to_pylist() if annotated is not None else []
    feedback = {row["sample_id"]: (row["checks"], row["suggestion"]) for row in rows}
    keys = []
    for row in records.select(["sample_id", "prompt", "language", "original_answer"]).to_pylist():
        checks, suggestion = feedback.get(row["sample_id"], (None, None))
        messages = llm.correction_messages(
            row["prompt"], row["language"], row["original_answer"], checks, suggestion, settings
        )
        keys.append(llm.request_key(endpoint, settings, messages))
    return keys


def llm_answers(records: pa.Table) -> list[str]:
    """The corrected answers the LLM gave erased samples (as cached: the cache keeps them verbatim)."""
    answered = records.filter(pc.fill_null(pc.equal(records.column("completion_strategy"), llm.STRATEGY), False))
    return [text for text in answered.column("completion").to_pylist() if text]


def flag_models(registry: ModelRegistry, erased_by_version: Mapping[str, int]) -> list[dict]:
    """Mark the model versions trained on a dataset version that held erased records
    (`trained_on_erased: true`, `erased_records`: how many, over every erasure); returns them."""
    flagged = []
    for entry in registry.versions():
        removed = erased_by_version.get(entry.get("dataset_version", ""))
        if removed:
            flagged.append(
                registry.update(
                    entry["version"],
                    trained_on_erased=True,
                    erased_records=int(entry.get("erased_records", 0)) + removed,
                )
            )
    return flagged


def models_trained_on_erased(registry: ModelRegistry) -> list[dict]:
    return [entry for entry in registry.versions() if entry.get("trained_on_erased")]
