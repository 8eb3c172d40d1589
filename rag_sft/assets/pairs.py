"""embedding_pairs and retrieval_gaps: the retrieval faults of a day as training data for the
embedding model (docs/spec.md, "Rule 16: Embedding pairs"; docs/retriever.md, "Embedding pairs")."""

import time
from collections import Counter

import dagster as dg
import numpy as np

from rag_sft.assets.metadata import DATA_OWNERS, PIPELINE_CODE_VERSION, column_schema, count_table, humanized_bytes
from rag_sft.assets.partitions import daily_partitions
from rag_sft.checks import export_gate
from rag_sft.checks import pairs as pair_checks
from rag_sft.core import pairs
from rag_sft.core import triage as triage_core
from rag_sft.core.invariants import require
from rag_sft.io.storage.location import Location
from rag_sft.io.storage.memory import streaming_day
from rag_sft.io.storage.warehouse import PartitionWriter, StagedFile, read_batches
from rag_sft.resources import Triage, Warehouse

EMBEDDING_PAIRS = dg.AssetKey("embedding_pairs")
RETRIEVAL_GAPS = dg.AssetKey("retrieval_gaps")
PAIRS_FILE = "pairs.jsonl"
_COLUMNS = [
    "request_id", "sample_id", "question", "language", "route", "route_reason", "context_judged_by",
    "context_docs", "doc_roles", "doc_similarity",
]


def pairs_path(warehouse: Warehouse, day: str) -> Location:
    """data/datasets/embedding/date=YYYY-MM-DD/pairs.jsonl (docs/retriever.md, "Embedding pairs")."""
    return warehouse.root() / "datasets" / "embedding" / f"date={day}" / PAIRS_FILE


@dg.multi_asset(
    specs=[
        dg.AssetSpec(
            EMBEDDING_PAIRS,
            deps=["annotated_samples"],
            group_name="retrieval",
            kinds={"parquet", "json"},
            description="The day's retrieval faults (routes retrieval and both) as embedding training pairs: query, "
            "positives (retrieved passages judged relevant), hard negatives (judged irrelevant), with lineage; and "
            "FlagEmbedding's JSONL (datasets/embedding/date=…/pairs.jsonl).",
            metadata={"dagster/column_schema": column_schema(pairs.EMBEDDING_PAIRS)},
            owners=DATA_OWNERS,
            code_version=PIPELINE_CODE_VERSION,
        ),
        dg.AssetSpec(
            RETRIEVAL_GAPS,
            deps=["annotated_samples"],
            group_name="retrieval",
            kinds={"parquet"},
            description="Retrieval faults with no positive: no retrieved passage held the answer and no knowledge base "
            "was mined. The questions the knowledge base may be missing.",
            metadata={"dagster/column_schema": column_schema(pairs.RETRIEVAL_GAPS)},
            owners=DATA_OWNERS,
            code_version=PIPELINE_CODE_VERSION,
        ),
    ],
    partitions_def=daily_partitions,
    check_specs=pair_checks.SPECS,
)
def embedding_pairs(context: dg.AssetExecutionContext, warehouse: Warehouse, triage: Triage):
    day = context.partition_key
    settings = pairs.PairSettings(triage.min_query_length, triage.max_query_length)
    started = time.perf_counter()
    similarities: list[np.ndarray] = []
    flagged: dict[str, list[str]] = {pairs.SHORT_QUERY: [], pairs.LONG_QUERY: []}
    overlapping: list[str] = []
    lowest: list[tuple[float, str]] = []
    routes: Counter = Counter()
    judged_by: Counter = Counter()
    gap_examples: list[dict] = []
    negatives = positives = 0
    with streaming_day(), StagedFile(pairs_path(warehouse, day)) as jsonl, PartitionWriter(
        warehouse.table_dir("embedding_pairs"), day, pairs.EMBEDDING_PAIRS, warehouse.parquet_compression, pairs.FREE_TEXT
    ) as pair_writer, PartitionWriter(
        warehouse.table_dir("retrieval_gaps"), day, pairs.RETRIEVAL_GAPS, warehouse.parquet_compression, pairs.FREE_TEXT
    ) as gap_writer:
        for batch in read_batches(warehouse.table_dir("annotated_samples"), day, _COLUMNS, warehouse.batch_size):
            routed = batch.column("route").to_pylist()
            routes.update(route for route in routed if route in triage_core.PAIR_ROUTES)
            made, gaps = pairs.pairs_of_batch(batch, settings)
            pair_writer.write(made)
            gap_writer.write(gaps)
            jsonl.append(pairs.jsonl_bytes(made))
            measured = pairs.positive_similarities(made)
            similarities.append(measured)
            overlapping.extend(pairs.overlapping_texts(made))
            for row in made.select(["request_id", "flags", "judged_by", "pos", "neg"]).to_pylist():
                judged_by[row["judged_by"]] += 1
                positives += len(row["pos"])
                negatives += len(row["neg"])
                for flag in row["flags"]:
                    flagged.setdefault(flag, []).append(row["request_id"])
                measured_row = [p["similarity"] for p in row["pos"] if p["similarity"] is not None]
                if measured_row and min(measured_row) < triage.min_pair_similarity:
                    lowest.append((min(measured_row), row["request_id"]))
            gap_examples.extend(gaps.select(["request_id", "question", "reason"]).to_pylist()[: max(0, 20 - len(gap_examples))])
        # Every pairs-bound sample is a pair or a gap, once.
        require(pair_writer.rows + gap_writer.rows == sum(routes.values()),
                f"{day}: {pair_writer.rows} pairs + {gap_writer.rows} gaps != {sum(routes.values())} retrieval faults")
        size, sha256 = jsonl.finish()
        verdicts = [
            pairs.similarity_verdict(np.concatenate([np.zeros(0), *similarities]), [i for _, i in sorted(lowest)[:10]],
                                     triage.min_pair_similarity),
            pairs.length_verdict(flagged, pair_writer.rows),
            pairs.disjoint_verdict(overlapping, pair_writer.rows),
        ]
        published = not any(verdict.holds_back for verdict in verdicts)
        if published:
            jsonl.publish()
        else:  # never leave an earlier run's file for a day whose pairs broke the rule
            pairs_path(warehouse, day).unlink(missing_ok=True)
        pairs_file = pair_writer.commit()
        gaps_file = gap_writer.commit()
    seconds = time.perf_counter() - started
    context.log.info(
        f"{day}: {pair_writer.rows} embedding pairs ({positives} positives, {negatives} hard negatives), "
        f"{gap_writer.rows} retrieval gaps, in {seconds:.2f} s"
    )
    yield dg.MaterializeResult(
        asset_key=EMBEDDING_PAIRS,
        metadata={
            "dagster/row_count": pair_writer.rows,
            # retrieval faults = pairs + gaps (docs/retriever.md, "How the counts add up")
            "retrieval_faults": sum(routes.values()),
            "pairs_by_route": count_table(routes, "route"),
            "judged_by": count_table(judged_by, "judged_by"),
            "positives": positives,
            "hard_negatives": negatives,
            "retrieval_gaps": gap_writer.rows,
            "flagged_queries": sum(len(ids) for ids in flagged.values()),
            "published": published,
            "bytes": size,
            "size": humanized_bytes(size),
            "sha256": sha256,
            "path": dg.MetadataValue.path(str(pairs_file)),
            **({"jsonl_path": dg.MetadataValue.path(str(pairs_path(warehouse, day)))} if published else {}),
        },
    )
    yield dg.MaterializeResult(
        asset_key=RETRIEVAL_GAPS,
        metadata={
            "dagster/row_count": gap_writer.rows,
            "gaps": dg.MetadataValue.table(
                records=[dg.TableRecord({"request_id": g["request_id"], "question": g["question"][:200],
                                         "reason": triage_core.reason_kind(g["reason"] or "")}) for g in gap_examples],
                schema=dg.TableSchema(columns=[dg.TableColumn("request_id", "string"), dg.TableColumn("question", "string"),
                                               dg.TableColumn("reason", "string")]),
            ),
            "path": dg.MetadataValue.path(str(gaps_file)),
        },
    )
    for verdict in verdicts:
        yield export_gate.check_result(verdict)

