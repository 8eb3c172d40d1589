"""annotated_samples and sft_records: the SFT rules applied batch by batch."""

from collections import Counter
from pathlib import Path

import dagster as dg
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from rag_sft.assets.metadata import (
    DATA_OWNERS,
    PIPELINE_CODE_VERSION,
    column_schema,
    completion_metadata,
    count_table,
    percent,
    share_numbers,
    stat_numbers,
)
from rag_sft.assets.partitions import daily_partitions
from rag_sft.checks import export_gate
from rag_sft.core import near_duplicates, pii, rules, samples, tables
from rag_sft.core import triage as triage_core
from rag_sft.core.invariants import require
from rag_sft.core.parallel import ordered_map
from rag_sft.core.records import RecordsTally, value_counts
from rag_sft.io.state.export_ledger import export_status, trailing_label_counts
from rag_sft.io.state.near_duplicate_index import NearDuplicateIndex
from rag_sft.io.state.request_index import RequestIndex
from rag_sft.io.storage.location import Location
from rag_sft.io.storage.memory import streaming_day
from rag_sft.io.storage.warehouse import (
    PART_FILE,
    PartitionWriter,
    RowGroup,
    partition_dir,
    read_batches,
    publish_partition_file,
    row_groups,
)
from rag_sft.lost_state import require_state_describes_data
from rag_sft.resources import Completions, ExportChecks, SftRules, Triage, Warehouse


def confidence_summary(values: list[pa.Array]) -> dict[str, float | None]:
    if not values or sum(len(v) for v in values) == 0:
        return {"count": 0, "min": None, "mean": None, "p50": None, "max": None}
    column = pa.chunked_array(values, pa.float64())
    return {
        "count": len(column),
        "min": pc.min(column).as_py(),
        "mean": pc.mean(column).as_py(),
        "p50": pc.quantile(column, q=0.5)[0].as_py(),
        "max": pc.max(column).as_py(),
    }


@dg.asset(
    deps=["raw_events"],
    partitions_def=daily_partitions,
    group_name="samples",
    kinds={"parquet"},
    description="Main label, top-k context docs, correction instruction, language, confidence, sample_id; "
    "personal data in the question, answer, docs and suggestion replaced by typed placeholders.",
    metadata={"dagster/column_schema": column_schema(tables.ANNOTATED_SAMPLES)},
    owners=DATA_OWNERS,
    code_version=PIPELINE_CODE_VERSION,
)
def annotated_samples(context: dg.AssetExecutionContext, warehouse: Warehouse, sft_rules: SftRules, triage: Triage):
    day = context.partition_key
    settings = sft_rules.settings()
    triage_settings, similarity = triage.settings(), triage.similarity_function(sft_rules.doc_max_chars)
    routes: Counter = Counter()
    route_reasons: Counter = Counter()
    labels: Counter = Counter()
    languages: Counter = Counter()
    confidences: list[pa.Array] = []
    personal_data: Counter = Counter()
    with streaming_day(), PartitionWriter(
        warehouse.table_dir("annotated_samples"), day, tables.ANNOTATED_SAMPLES, warehouse.parquet_compression, tables.FREE_TEXT
    ) as writer:
        groups = row_groups(warehouse.table_dir("raw_events"), day)
        for _, (batch, found) in ordered_map(
            _annotate_group, groups, warehouse.worker_count(), settings, triage_settings, similarity, threads=True
        ):
            writer.write(batch)
            routes.update(value_counts(batch.column("route")))
            route_reasons.update(triage_core.reason_counts(batch))
            personal_data.update(found)
            labels.update(value_counts(batch.column("label")))
            languages.update(value_counts(batch.column("language")))
            confidences.append(batch.column("confidence"))
        path = writer.commit()
    # Every accepted event has exactly one route (docs/retriever.md, "How the counts add up").
    require(sum(routes.values()) == writer.rows, f"{day}: routes {dict(routes)} do not add up to {writer.rows} samples")
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": writer.rows,
            **triage_metadata(routes, route_reasons, triage_settings.enabled, triage.similarity),
            "label_distribution": count_table(labels, "label"),
            "languages": count_table(languages, "language"),
            **stat_numbers("confidence", confidence_summary(confidences)),
            **share_numbers("label_share_pct", labels, rules.LABEL_PRIORITY),
            # Placeholders put in by kind (0 for every kind: nothing found; "off": not redacted).
            "personal_data_redacted": dg.MetadataValue.json(
                {kind: personal_data[kind] for kind in pii.KINDS} if settings.redact_pii else "off"
            ),
            "path": dg.MetadataValue.path(str(path)),
        }
    )


@dg.asset(
    deps=["annotated_samples"],
    partitions_def=daily_partitions,
    group_name="samples",
    kinds={"parquet"},
    description="Prompt, completion, weights and lineage of every sample; filtered ones keep their reason. "
    "Its checks decide whether the day is exported; a held-back day's records say held_back and which check. "
    "accepted = exported + filtered + held_back.",
    check_specs=[export_gate.CONFIDENCE, export_gate.LABEL_BALANCE],
    metadata={"dagster/column_schema": column_schema(tables.SFT_RECORDS)},
    owners=DATA_OWNERS,
    code_version=PIPELINE_CODE_VERSION,
)
def sft_records(
    context: dg.AssetExecutionContext,
    warehouse: Warehouse,
    sft_rules: SftRules,
    completions: Completions,
    export_checks: ExportChecks,
):
    day = context.partition_key
    settings = sft_rules.settings()
    annotated_dir = warehouse.table_dir("annotated_samples")
    require_state_describes_data(context.instance, warehouse, sft_rules.near_duplicates)

    # Near-duplicates first: they would skew the label counts. A day is never capped for balance
    # (the training set is: docs/spec.md, "Rule 12: Balance"); its label mix is compared with the trailing days'.
    near, disagreements = None, []
    if sft_rules.near_duplicates:
        near = _near_duplicates(day, annotated_dir, warehouse, settings, sft_rules.near_duplicate_similarity)
        disagreements = _differing_suggestions(day, annotated_dir, near.set_aside, warehouse.batch_size)
    set_aside = near.set_aside if near else None

    gate = export_checks.settings(sft_rules.min_confidence)
    label_weights = _label_weights(day, annotated_dir, set_aside, warehouse.batch_size, settings)

    tally = RecordsTally(keep_sample_ids=near is not None)
    table_dir = warehouse.table_dir("sft_records")
    # The day is written to a scratch copy of the table first: the checks judge it only once it
    # is whole, and a held-back day's rows must say so before anyone can read them.
    with warehouse.scratch_dir() as scratch:
        with completions.open(warehouse) as strategy, streaming_day(), PartitionWriter(
            scratch / table_dir.name, day, tables.SFT_RECORDS, warehouse.parquet_compression, tables.FREE_TEXT
        ) as writer:
            groups = row_groups(annotated_dir, day)
            for _, batch in ordered_map(
                _records_of_group, groups, warehouse.worker_count(), settings, strategy, label_weights, set_aside,
                threads=True,
            ):
                writer.write(batch)
                tally.add(batch)
            writer.commit()
            completion_figures = strategy.metadata()

        # The checks judge the records that would be exported, before a hold-back relabels them.
        trailing_labels, trailing_days = trailing_label_counts(context.instance, day, gate.label_mix_days)
        tally.require_accounts_for(writer.rows, day)
        verdicts = tally.verdicts(writer.rows, trailing_labels, trailing_days, label_weights, gate)
        held_back = [verdict for verdict in verdicts if verdict.holds_back]
        if near is not None:
            _remember_exported(day, warehouse, near, set() if held_back else tally.exported_ids)
        with warehouse.open_state(RequestIndex) as requests:
            requests.replace_day(day, [] if held_back else tally.exported_requests)
        export = export_status(export_gate.hold_back(context, warehouse, held_back) if held_back else "")
        path = _publish_partition(scratch / table_dir.name, table_dir, day, [v.check for v in held_back], warehouse)

    _log_records(context, day, writer.rows, tally, bool(held_back), completion_figures)
    yield dg.MaterializeResult(
        metadata=_records_metadata(
            writer.rows, tally, bool(held_back), label_weights, near, disagreements, strategy.name, completion_figures
        )
        | {"export": export, "path": dg.MetadataValue.path(str(path))}
    )
    for verdict in verdicts:
        yield export_gate.check_result(verdict)


def triage_metadata(routes: Counter, reasons: Counter, enabled: bool, similarity: str) -> dict:
    """The day's routes (docs/spec.md, "Rule 15: Triage"): a count per route (plottable, every
    route listed), and the reasons, by route."""
    return {
        "triage": "on" if enabled else "off",
        "triage_similarity": similarity,
        **{f"route/{route}": int(routes.get(route, 0)) for route in triage_core.ROUTES},
        "routes": count_table(routes, "route"),
        "route_reasons": dg.MetadataValue.table(
            records=[
                dg.TableRecord({"route": route, "reason": reason, "count": count})
                for (route, reason), count in sorted(reasons.items(), key=lambda item: (-item[1], item[0]))
            ],
            schema=dg.TableSchema(
                columns=[dg.TableColumn("route", "string"), dg.TableColumn("reason", "string"), dg.TableColumn("count", "int")]
            ),
        ),
    }


def _label_weights(day: str, annotated_dir: Location, set_aside, batch_size: int, settings) -> dict[str, float]:
    """Label weights depend on the whole day's label counts, so count first (few columns)."""
    eligible_labels: Counter = Counter()
    for batch in read_batches(annotated_dir, day, ["sample_id", "label", "confidence", "route"], batch_size):
        eligible_labels.update(tables.exported_label_counts(tables.without(batch, set_aside), settings))
    return samples.label_weights_for(eligible_labels, settings)


def _log_records(context: dg.AssetExecutionContext, day: str, rows: int, tally: RecordsTally, held_back: bool, completion_figures) -> None:
    held_back_count = tally.would_export if held_back else 0
    context.log.info(
        f"{day}: accepted {rows}, exported {tally.would_export - held_back_count}, filtered "
        f"{dict(tally.filter_reasons)}, held back {held_back_count}"
    )
    if tally.completion_failed:
        context.log.warning(
            f"{day}: {tally.completion_failed} samples have no corrected answer (not exported; asked again on the next "
            f"materialization): {completion_figures.get('failures')}"
        )


def _records_metadata(
    rows: int, tally: RecordsTally, held_back: bool, label_weights, near, disagreements, strategy_name: str, completion_figures
) -> dict:
    """sft_records' numbers for the UI (the export status and the path are added by the asset)."""
    held_back_count = tally.would_export if held_back else 0
    return {
        "dagster/row_count": rows,
        # accepted = exported + filtered + held_back: every accepted event in exactly one of them.
        "accepted": rows,
        "exported": tally.would_export - held_back_count,
        "filtered": tally.filtered,
        "held_back": held_back_count,
        "filter_reasons": count_table(tally.filter_reasons, "reason"),
        # Every record's triage route; retrieval and review ones are filtered as triage_retrieval / triage_review.
        **{f"route/{route}": int(tally.routes.get(route, 0)) for route in triage_core.ROUTES},
        "routes": count_table(tally.routes, "route"),
        # What the checks judged: the exported records, or those a hold-back kept back.
        "day_held_back": int(held_back),  # 0/1: plots as a series of held-back days
        "filtered_share_pct": percent(tally.filtered / rows) if rows else 0.0,
        "label_distribution": count_table(tally.exported_labels, "label"),
        **share_numbers("label_share_pct", tally.exported_labels, rules.LABEL_PRIORITY),
        **{f"label_weight/{label}": round(weight, 4) for label, weight in sorted(label_weights.items())},
        **stat_numbers("confidence", confidence_summary(tally.confidences)),
        # What the day exported of each label: the trailing days' mix for the days after it.
        "label_counts": dg.MetadataValue.json({} if held_back else dict(sorted(tally.exported_labels.items()))),
        "near_duplicates": dg.MetadataValue.json(
            {
                "within_day": near.within_day,
                "across_days": near.across_days,
                "kept": len(near.kept),
                # Groups whose members' evaluator suggestions disagree: one answer is kept (the LLM
                # is asked once per group), worth a look; the first pairs as (kept, set aside).
                "differing_suggestions": len(disagreements),
                "differing_suggestions_examples": disagreements[:5],
            }
            if near
            else "off"
        ),
        "near_duplicate_differing_suggestions": len(disagreements),
        "completion_strategy": strategy_name,
        "completion_failed": tally.completion_failed,
        **completion_metadata(completion_figures),
    }


# Each thread reads its own row group (Parquet decoding releases the GIL too).
def _annotate_group(group: RowGroup, settings, triage_settings, similarity) -> tuple[pa.RecordBatch, Counter]:
    annotated, found = tables.annotate_and_redact(group.read(), settings)
    return tables.with_triage(annotated, triage_settings, similarity), found


def _signatures_of_group(group: RowGroup, settings) -> tuple[list[str], np.ndarray]:
    # Only the samples triage sends to SFT: a retrieval fault must not stand in for a question's SFT sample.
    batch = triage_core.for_sft(group.read([*near_duplicates.SIGNATURE_COLUMNS, "route"]))
    return near_duplicates.batch_signatures(batch, settings.min_confidence)


def _records_of_group(group: RowGroup, settings, strategy, label_weights, set_aside) -> pa.RecordBatch:
    return tables.records_batch(group.read(), settings, strategy, label_weights, set_aside)


def _near_duplicates(day: str, annotated_dir: Location, warehouse: Warehouse, settings, similarity: float):
    """The day's near-duplicates against itself and the earlier days' kept samples; the day's
    kept ones go to the index for the days after it."""
    sample_ids: list[str] = []
    parts = [np.zeros((0, near_duplicates.NUM_PERM), dtype=np.uint32)]
    groups = row_groups(annotated_dir, day)
    for _, (ids, signature) in ordered_map(_signatures_of_group, groups, warehouse.worker_count(), settings, threads=True):
        sample_ids.extend(ids)
        parts.append(signature)
    signature = np.concatenate(parts)
    banding = near_duplicates.Banding.for_threshold(similarity)
    with warehouse.open_state(NearDuplicateIndex) as index:
        return near_duplicates.deduplicate_day(sample_ids, signature, lambda keys: index.earlier(day, keys), banding, similarity)


def _differing_suggestions(day: str, annotated_dir: Path, set_aside: pa.Table, batch_size: int) -> list[tuple[str, str]]:
    """The day's near-duplicate pairs whose suggestions differ (reads only the grouped samples)."""
    if not set_aside.num_rows:
        return []
    grouped = pa.concat_arrays([set_aside.column("sample_id").combine_chunks(), set_aside.column("duplicate_of").combine_chunks()])
    suggestions: dict[str, str] = {}
    for batch in read_batches(annotated_dir, day, ["sample_id", "suggestion"], batch_size):
        batch = batch.filter(pc.is_in(batch.column("sample_id"), value_set=grouped))
        suggestions.update(zip(batch.column("sample_id").to_pylist(), batch.column("suggestion").to_pylist()))
    return near_duplicates.differing_suggestions(set_aside, suggestions)


def _remember_exported(day: str, warehouse: Warehouse, near, exported: set[str]) -> None:
    """The day's kept samples that it exports, for the days after it (a held-back day: none)."""
    kept = [index for index in near.kept if near.sample_ids[index] in exported]
    with warehouse.open_state(NearDuplicateIndex) as index:
        index.replace_day(day, [near.sample_ids[i] for i in kept], near.signatures[kept], near.keys[kept])


def _publish_partition(
    staged_table: Path, table_dir: Location, day: str, held_back_by: list[str], warehouse: Warehouse
) -> Location:
    """Swap the staged day into the table. A held-back day is rewritten on the way, row group by
    row group (memory stays bounded), so its would-be-exported rows say `held_back`."""
    if not held_back_by:
        return publish_partition_file(partition_dir(staged_table, day) / PART_FILE, table_dir, day)
    with PartitionWriter(table_dir, day, tables.SFT_RECORDS, warehouse.parquet_compression, tables.FREE_TEXT) as writer:
        for group in row_groups(staged_table, day):
            writer.write(tables.held_back_batch(group.read(), held_back_by))
        return writer.commit()
