"""Helpers that turn core results into Dagster UI metadata: numbers the Plots tab can trend
across partitions (shares as percentages), tables where rows read better, path entries for
files, and the definitions' column schemas, owners and code version."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from pathlib import Path

import dagster as dg
import pyarrow as pa

# Who answers for the assets (Dagster owners: a team or an e-mail address).
DATA_OWNERS = ["team:rag-data"]
ML_OWNERS = ["team:rag-ml"]

_PACKAGE = Path(__file__).resolve().parents[1]
# What shapes the outputs, as in dvc.yaml's export stage: the rules, I/O, assets and checks.
_PIPELINE_CODE = ("core", "io", "assets", "checks", "resources.py")


def _code_version(parts: tuple[str, ...]) -> str:
    digest = hashlib.sha256()
    for part in parts:
        root = _PACKAGE / part
        for path in sorted(root.rglob("*.py")) if root.is_dir() else [root]:
            digest.update(path.relative_to(_PACKAGE).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


# The assets' code_version: a hash of the code that shapes them, so the UI flags a partition
# materialized by other code (a version string kept by hand would drift).
PIPELINE_CODE_VERSION = _code_version(_PIPELINE_CODE)
TRAINING_CODE_VERSION = _code_version((*_PIPELINE_CODE, "training"))


def percent(share: float) -> float:
    return round(share * 100, 2)


def count_table(counts: Mapping[str, int], key_name: str, total: int | None = None) -> dg.MetadataValue:
    """A table of counts and their share of `total` (of the counts when not given) in percent, largest first."""
    total = total if total is not None else sum(counts.values())
    columns = [
        dg.TableColumn(key_name, "string"),
        dg.TableColumn("count", "int"),
        dg.TableColumn("share_pct", "float"),
    ]
    records = [
        dg.TableRecord({key_name: key, "count": int(count), "share_pct": percent(count / total) if total else 0.0})
        for key, count in sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    ]
    return dg.MetadataValue.table(records=records, schema=dg.TableSchema(columns=columns))


def share_numbers(prefix: str, counts: Mapping[str, int], keys: Iterable[str] = ()) -> dict[str, dg.MetadataValue]:
    """`<prefix>/<key>`: each key's share of the counts in percent, one plottable number each;
    `keys` listed always (0 when absent), so a series does not vanish on a day without them."""
    total = sum(counts.values())
    names = sorted({*keys, *counts})
    return {f"{prefix}/{name}": dg.MetadataValue.float(percent(counts.get(name, 0) / total) if total else 0.0) for name in names}


def stat_numbers(prefix: str, stats: Mapping[str, float | None]) -> dict[str, dg.MetadataValue]:
    """`<prefix>_<stat>` for each statistic there is (an empty day has none)."""
    return {f"{prefix}_{name}": dg.MetadataValue.float(round(value, 4)) for name, value in stats.items() if value is not None and name != "count"}


def humanized_bytes(size: int) -> str:
    units = ["B", "KiB", "MiB", "GiB", "TiB"]
    value, index = float(size), 0
    while value >= 1024 and index < len(units) - 1:
        value, index = value / 1024, index + 1
    return f"{size} B" if index == 0 else f"{value:.1f} {units[index]}"


def column_schema(schema: pa.Schema, partition_column: str | None = "date") -> dg.TableSchema:
    """A Parquet table's documented columns (core/tables.py) as `dagster/column_schema`, with
    the Hive partition column readers get from the folder name."""
    columns = [dg.TableColumn(field.name, str(field.type)) for field in schema]
    if partition_column:
        columns.append(dg.TableColumn(partition_column, "string", description="the partition's day, from the date= folder"))
    return dg.TableSchema(columns=columns)


def completion_metadata(figures: Mapping) -> dict:
    """The LLM strategy's figures as flat entries (numbers the UI can plot across partitions)."""
    if not figures:
        return {}
    return {
        "llm_model": figures["model"],
        "llm_samples": figures["samples"],
        "llm_distinct_requests": figures["distinct_requests"],
        "llm_cache_hits": figures["cache_hits"],
        "llm_requests": figures["requests"],
        "llm_retries": count_table(figures["retries"], "reason"),
        "llm_failures": count_table(figures["failures"], "reason"),
        "llm_prompt_tokens": figures["prompt_tokens"],
        "llm_completion_tokens": figures["completion_tokens"],
        **stat_numbers("llm_latency_s", figures["latency_s"]),
    }
