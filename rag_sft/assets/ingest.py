"""raw_events and its dead letter, rejected_events: one read of the source feeds both."""

from datetime import date

import dagster as dg
from pydantic import Field

from rag_sft.assets.metadata import DATA_OWNERS, PIPELINE_CODE_VERSION, column_schema, count_table, percent
from rag_sft.assets.partitions import daily_partitions
from rag_sft.core import erasure, ingest, tables
from rag_sft.core.invariants import require
from rag_sft.io.sources.landing import LandingFolder
from rag_sft.io.sources.landing_scan import LandingChanged
from rag_sft.io.sources.lines import SourceUnavailable
from rag_sft.io.state.erasure_ledger import ErasureLedger
from rag_sft.io.state.request_index import RequestIndex
from rag_sft.io.storage.memory import streaming_day
from rag_sft.io.storage.warehouse import PartitionWriter
from rag_sft.lost_state import require_state_describes_data
from rag_sft.resources import EventSource, SftRules, Warehouse

RAW_EVENTS = dg.AssetKey("raw_events")
REJECTED_EVENTS = dg.AssetKey("rejected_events")
ACCEPT_LOSS_COMMAND = "rag-sft landing accept-loss"


class RawEventsConfig(dg.Config):
    accept_source_loss: bool = Field(
        default=False,
        description="Materialize the day even though files of the landing folder that held its events went "
        "away or lost lines (its outputs then have fewer events than before). Off: such a day fails with the "
        f"files named, and keeps its outputs. The same as `{ACCEPT_LOSS_COMMAND} DAY`.",
    )


def refuse_lost_lines(source, day: date, accept: bool) -> None:
    """A day whose landing files went away or shrank is not re-published smaller unless a person
    said so (`accept`): a rotated-away or deleted file is not "a day with fewer events"."""
    if not isinstance(source, LandingFolder):
        return
    if accept:
        source.accept_loss(day)
        return
    lost = source.loss(day)
    if lost is not None:
        raise dg.Failure(
            description=f"{lost.describe()}. The day's outputs are kept as they were. Restore the files, or accept "
            f"the loss: `{ACCEPT_LOSS_COMMAND} {day}` (or accept_source_loss: true in raw_events' config).",
            allow_retries=False,
        )


@dg.multi_asset(
    specs=[
        dg.AssetSpec(
            RAW_EVENTS,
            description="The day's valid quality events, normalized, first of each request_id kept.",
            group_name="ingest",
            kinds={"parquet"},
            metadata={"dagster/column_schema": column_schema(tables.RAW_EVENTS)},
            owners=DATA_OWNERS,
            code_version=PIPELINE_CODE_VERSION,
        ),
        dg.AssetSpec(
            REJECTED_EVENTS,
            description="Dead letter: every malformed or duplicate line of the day with its reason and raw text.",
            group_name="ingest",
            kinds={"parquet"},
            metadata={"dagster/column_schema": column_schema(tables.REJECTED_EVENTS)},
            owners=DATA_OWNERS,
            code_version=PIPELINE_CODE_VERSION,
        ),
    ],
    partitions_def=daily_partitions,
)
def raw_events(
    context: dg.AssetExecutionContext,
    config: RawEventsConfig,
    event_source: EventSource,
    warehouse: Warehouse,
    sft_rules: SftRules,
):
    day = context.partition_key
    try:
        source = event_source.open(warehouse.state_dir())
        # A lost state folder must not let erased requests back in, nor duplicates of earlier days.
        require_state_describes_data(context.instance, warehouse, sft_rules.near_duplicates)
        refuse_lost_lines(source, date.fromisoformat(day), config.accept_source_loss)
        ignored = source.ignored_files() if isinstance(source, LandingFolder) else []
        if ignored:
            context.log.warning(f"{len(ignored)} files of the landing folder are not JSON Lines by name and were not read: {ignored[:20]}")
        counts = ingest.IngestCounts()
        with warehouse.open_state(ErasureLedger) as ledger:
            erased = ledger.request_ids()  # requests erased on request never come back
        with (
            streaming_day(),
            # A request exported on an earlier day is a duplicate of that day (first seen = earliest day).
            warehouse.open_state(RequestIndex) as requests,
            warehouse.scratch_dir() as scratch,
            PartitionWriter(warehouse.table_dir("raw_events"), day, tables.RAW_EVENTS, warehouse.parquet_compression, tables.FREE_TEXT) as accepted,
            PartitionWriter(warehouse.table_dir("rejected_events"), day, tables.REJECTED_EVENTS, warehouse.parquet_compression, tables.FREE_TEXT) as dead,
        ):
            chunks = source.judged_chunks(
                date.fromisoformat(day), sft_rules.max_field_chars, warehouse.batch_size, warehouse.worker_count(), scratch
            )
            deduplicated = ingest.deduplicated(chunks, counts, lambda ids: requests.first_days(day, ids))
            for batch in erasure.without_erased(deduplicated, erased, counts):
                if sft_rules.redact_raw:
                    batch = ingest.redacted(batch)
                if batch.accepted is not None:
                    accepted.write(batch.accepted)
                if batch.dead_letter is not None:
                    dead.write(batch.dead_letter)
            raw_path = accepted.commit()
            dead_path = dead.commit()
    except (SourceUnavailable, LandingChanged) as error:
        raise dg.Failure(description=str(error), allow_retries=False) from None

    require(counts.reconciles(), f"{day}: read {counts.read} != accepted {counts.accepted} + duplicates "
            f"{counts.duplicates} + rejected {counts.rejected} + erased {counts.erased}: an event was lost or counted twice")
    context.log.info(
        f"{day}: read {counts.read}, accepted {counts.accepted}, duplicates {counts.duplicates}, "
        f"rejected {counts.rejected} {dict(counts.reject_reasons)}, erased {counts.erased}"
    )
    yield from _materializations(counts, ignored, raw_path, dead_path)


def _materializations(counts: ingest.IngestCounts, ignored: list[str], raw_path, dead_path):
    """raw_events' and rejected_events' results: the day's counts for the UI."""
    outcome_counts = {"accepted": counts.accepted, "duplicate": counts.duplicates, "rejected": counts.rejected}
    if counts.erased:
        outcome_counts[erasure.ERASED] = counts.erased
    yield dg.MaterializeResult(
        asset_key=RAW_EVENTS,
        metadata={
            "dagster/row_count": counts.accepted,
            "events_read": counts.read,
            "accepted": counts.accepted,
            "duplicates": counts.duplicates,
            "rejected": counts.rejected,
            "erased": counts.erased,
            "rejected_share_pct": percent(counts.rejected / counts.read) if counts.read else 0.0,
            "duplicate_share_pct": percent(counts.duplicates / counts.read) if counts.read else 0.0,
            "counts_by_outcome": count_table(outcome_counts, "outcome", counts.read),
            "ignored_landing_files": len(ignored),
            **({"ignored_landing_file_names": dg.MetadataValue.json(ignored[:100])} if ignored else {}),
            "path": dg.MetadataValue.path(str(raw_path)),
        },
    )
    yield dg.MaterializeResult(
        asset_key=REJECTED_EVENTS,
        metadata={
            "dagster/row_count": counts.rejected + counts.duplicates,
            "rejected": counts.rejected,
            "duplicates": counts.duplicates,
            "reject_reasons": count_table(dict(counts.reject_reasons), "reason"),
            "path": dg.MetadataValue.path(str(dead_path)),
        },
    )
