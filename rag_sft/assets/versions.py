"""sft_dataset_version: a named, immutable snapshot (v001, v002, ...) of exportable days."""

from collections.abc import Mapping

import dagster as dg
from pydantic import Field

from rag_sft.assets.metadata import DATA_OWNERS, PIPELINE_CODE_VERSION, count_table
from rag_sft.core.trigger import ExportLedger
from rag_sft.io.registry.dataset_versions import DatasetVersions, VersionConflict
from rag_sft.io.state.export_ledger import day_checks, update_ledger
from rag_sft.resources import Warehouse


SFT_DATASET_VERSION = dg.AssetKey("sft_dataset_version")


class DatasetVersionConfig(dg.Config):
    start: str = Field(default="", description="First day (YYYY-MM-DD) of the version; empty: the first exportable day.")
    end: str = Field(default="", description="Last day of the version; empty: the last exportable day.")


def exportable_days(instance: dg.DagsterInstance, start: str = "", end: str = "") -> dict[str, str]:
    """day -> sha256 of the days whose JSONL is published and passed its checks, within [start, end]."""
    exportable = update_ledger(instance, ExportLedger()).exportable()
    return {
        day: exported.sha256
        for day, exported in exportable.items()
        if (not start or day >= start) and (not end or day <= end)
    }


def make_version(instance: dg.DagsterInstance, warehouse: Warehouse, days: Mapping[str, str]) -> tuple[str, bool, dict]:
    """The version of `days` (made now, or the existing one with the same contents) and its manifest."""
    versions = DatasetVersions(warehouse.versions_dir())
    try:
        name, created = versions.create(days, warehouse.export_dir, {day: day_checks(instance, day) for day in days})
    except VersionConflict as error:
        raise dg.Failure(str(error), allow_retries=False) from None
    return name, created, versions.manifest(name)


def version_metadata(name: str, created: bool, manifest: dict, warehouse: Warehouse) -> dict:
    return {
        "dataset_version": name,
        "version_hash": manifest["hash"],
        "created": created,
        "days": dg.MetadataValue.json([entry["day"] for entry in manifest["days"]]),
        "day_count": len(manifest["days"]),
        "records": manifest["records"],
        "labels": count_table(manifest["labels"], "label"),
        "version_path": dg.MetadataValue.path(str(warehouse.versions_dir() / name)),
    }


@dg.asset(
    key=SFT_DATASET_VERSION,
    deps=["sft_jsonl"],
    group_name="export",
    kinds={"json"},
    owners=DATA_OWNERS,
    code_version=PIPELINE_CODE_VERSION,
    description="A named, immutable dataset version (v001, v002, ...) of the exportable days in a range: their "
    "files and a manifest (content hashes, record and label counts, check outcomes). The same days with the "
    "same contents give the existing version.",
)
def sft_dataset_version(
    context: dg.AssetExecutionContext, config: DatasetVersionConfig, warehouse: Warehouse
) -> dg.MaterializeResult:
    days = exportable_days(context.instance, config.start, config.end)
    if not days:
        raise dg.Failure(
            f"no exportable day between {config.start or 'the first'} and {config.end or 'the last'}: materialize "
            "days whose checks pass first",
            allow_retries=False,
        )
    name, created, manifest = make_version(context.instance, warehouse, days)
    context.log.info(f"dataset version {name} ({'new' if created else 'existing'}): {len(days)} days, {manifest['records']} records")
    return dg.MaterializeResult(metadata=version_metadata(name, created, manifest, warehouse))
