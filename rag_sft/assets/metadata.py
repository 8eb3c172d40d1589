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
        "llm_retries": dg.MetadataValue.json(figures["retries"]),
        "llm_failures": count_table(figures["failures"], "reason"),
        "llm_prompt_tokens": figures["prompt_tokens"],
        "llm_completion_tokens": figures["completion_tokens"],
        "llm_latency_s": number_summary(figures["latency_s"]),
    }
