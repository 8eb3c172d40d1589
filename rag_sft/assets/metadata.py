"""Helpers that turn core results into Dagster UI metadata."""

from __future__ import annotations

from collections.abc import Mapping

import dagster as dg


def count_table(counts: Mapping[str, int], key_name: str, total: int | None = None) -> dg.MetadataValue:
    """A table of counts (and shares when `total` is given), largest first."""
    total = total if total is not None else sum(counts.values())
    columns = [
        dg.TableColumn(key_name, "string"),
        dg.TableColumn("count", "int"),
        dg.TableColumn("share", "float"),
    ]
    records = [
        dg.TableRecord({key_name: key, "count": int(count), "share": round(count / total, 4) if total else 0.0})
        for key, count in sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    ]
    return dg.MetadataValue.table(records=records, schema=dg.TableSchema(columns=columns))


def number_summary(stats: Mapping[str, float | None]) -> dg.MetadataValue:
    return dg.MetadataValue.json({key: (round(value, 4) if value is not None else None) for key, value in stats.items()})
