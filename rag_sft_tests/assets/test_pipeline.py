import duckdb
import orjson
import pandas as pd
import pytest

from rag_sft.core.generator import GeneratorSettings, day_lines
from rag_sft_tests.helpers import event, write_lines

DAYS = ["2026-11-17", "2026-11-18", "2026-11-19"]


def generate(pipeline, days=DAYS, **settings):
    from datetime import date

    for day in days:
        path = pipeline.landing / f"events-{day}.jsonl"
        with path.open("wb") as handle:
            for line in day_lines(date.fromisoformat(day), GeneratorSettings(**settings)):
                handle.write(line)


def test_several_days_materialize_with_reconciled_counts_and_metadata(pipeline):
    generate(pipeline, events_per_day=300, malformed_share=0.05, duplicate_share=0.02)
    for day in DAYS:
        result = pipeline.materialize(day)
        raw = pipeline.metadata(result, "raw_events")
        rejected = pipeline.metadata(result, "rejected_events")
        records = pipeline.metadata(result, "sft_records")
        exported = pipeline.metadata(result, "sft_jsonl")
        annotated = pipeline.metadata(result, "annotated_samples")

        assert raw["events_read"] == 300
        assert raw["events_read"] == raw["accepted"] + raw["duplicates"] + raw["rejected"]
        assert raw["rejected"] > 0 and raw["duplicates"] > 0
        assert rejected["dagster/row_count"] == raw["rejected"] + raw["duplicates"]
        assert sum(r["count"] for r in _rows(rejected["reject_reasons"])) == raw["rejected"]
        assert annotated["dagster/row_count"] == raw["accepted"]
        assert records["accepted"] == raw["accepted"] == records["exported"] + records["filtered"]
        assert exported["dagster/row_count"] == records["exported"]
        assert sum(r["count"] for r in _rows(records["label_distribution"])) == records["exported"]
        # Plottable numbers, shares in percent.
        assert 0 <= annotated["confidence_min"] <= annotated["confidence_p50"] <= annotated["confidence_max"] <= 1
        assert records["confidence_min"] >= 0.6 and records["confidence_mean"] >= records["confidence_min"]
        assert records["filtered_share_pct"] == round(100 * records["filtered"] / records["accepted"], 2)
        shares = {key: value for key, value in records.items() if key.startswith("label_share_pct/")}
        assert {"label_share_pct/factuality_error", "label_share_pct/overconfidence"} <= set(shares)
        assert abs(sum(shares.values()) - 100) < 0.1
        assert raw["rejected_share_pct"] == round(100 * raw["rejected"] / raw["events_read"], 2)

        lines = pipeline.jsonl(day).read_bytes().splitlines()
        assert len(lines) == records["exported"]
        first = orjson.loads(lines[0])
        for field in ("prompt", "completion", "label", "confidence", "score", "sample_weight", "label_weight",
                      "sample_id", "request_id", "date"):
            assert field in first
        assert first["date"] == day
        assert first["confidence"] >= 0.6


def test_rematerializing_replaces_outputs_byte_for_byte(pipeline):
    generate(pipeline, days=["2026-11-19"], events_per_day=200, malformed_share=0.05, duplicate_share=0.05)
    pipeline.materialize("2026-11-19")
    first = pipeline.jsonl("2026-11-19").read_bytes()
    raw_first = pd.read_parquet(pipeline.data / "warehouse" / "raw_events")
    pipeline.materialize("2026-11-19")
    assert pipeline.jsonl("2026-11-19").read_bytes() == first
    raw_second = pd.read_parquet(pipeline.data / "warehouse" / "raw_events")
    assert len(raw_second) == len(raw_first)
    parts = list((pipeline.data / "warehouse" / "raw_events").rglob("*.parquet"))
    assert len(parts) == 1


def test_chinese_is_readable_in_the_jsonl(pipeline):
    write_lines(pipeline.landing / "e.jsonl", [event("zh-1", score=0.6)])
    pipeline.materialize("2026-11-19")
    text = pipeline.jsonl("2026-11-19").read_text(encoding="utf-8")
    assert "退款在七个工作日内到账" in text and "\\u" not in text
    record = orjson.loads(text)
    assert record["completion"] == "【纠正】三天内一定到账。"
    assert record["sample_id"] == "zh-1_factuality_error"
    assert record["prompt"].startswith("[文档1] 退款在七个工作日内到账。\n\n[文档2] 节假日顺延。")
    assert record["label_weight"] == pytest.approx(1.5 + 0.6)
    assert record["sample_weight"] == pytest.approx(1.8)


def test_bad_input_never_fails_the_partition(pipeline):
    write_lines(pipeline.landing / "bad.jsonl", [b"{", b"[]", b"\xff\xfe", event("ok"), b'{"timestamp": "2026-11-19T00:00:00Z"}'])
    result = pipeline.materialize("2026-11-19")
    assert result.success
    raw = pipeline.metadata(result, "raw_events")
    assert (raw["events_read"], raw["accepted"], raw["rejected"]) == (5, 1, 4)
    dead = pd.read_parquet(pipeline.data / "warehouse" / "rejected_events")
    assert sorted(dead["reason"]) == ["invalid_json", "invalid_utf8", "missing_field", "not_an_object"]


def test_a_day_without_events_writes_empty_outputs(pipeline):
    write_lines(pipeline.landing / "e.jsonl", [event("a")])
    result = pipeline.materialize("2026-11-18")
    assert pipeline.metadata(result, "raw_events")["events_read"] == 0
    assert pipeline.jsonl("2026-11-18").read_bytes() == b""


def test_missing_landing_folder_fails_with_a_clear_message(pipeline):
    pipeline.landing.rmdir()
    result = pipeline.materialize("2026-11-19", raise_on_error=False)
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert "landing folder" in failure.event_specific_data.error.message
    assert str(pipeline.landing) in failure.event_specific_data.error.message


def test_analysts_read_hive_partitions_with_pandas_and_duckdb(pipeline):
    generate(pipeline, events_per_day=50)
    for day in DAYS:
        pipeline.materialize(day)
    root = pipeline.data / "warehouse"
    frame = pd.read_parquet(root / "annotated_samples")
    assert sorted(frame["date"].astype(str).unique()) == DAYS
    assert {"sample_id", "label", "confidence", "context_docs", "instruction", "language"} <= set(frame.columns)
    rows = duckdb.sql(
        f"SELECT date, count(*) FROM read_parquet('{root}/sft_records/*/*.parquet', hive_partitioning=true) "
        "GROUP BY date ORDER BY date"
    ).fetchall()
    assert [str(day) for day, _ in rows] == DAYS
    assert sum(n for _, n in rows) == len(frame)


def _rows(table_metadata):
    return [record.data for record in table_metadata.records]


def test_a_line_nested_too_deep_is_one_rejected_event_and_the_day_succeeds(pipeline):
    deep = b'{"x":' * 1000 + b"1" + b"}" * 1000  # 7 KB
    deep_field = orjson.dumps(event("deep")).replace(b'"timestamp"', b'"extra":' + deep + b',"timestamp"')
    write_lines(pipeline.landing / "e.jsonl", [event("a"), deep, event("b"), deep_field, event("c")])
    result = pipeline.materialize("2026-11-19")
    assert result.success
    raw = pipeline.metadata(result, "raw_events")
    assert (raw["events_read"], raw["accepted"], raw["duplicates"], raw["rejected"]) == (5, 3, 0, 2)
    dead = pd.read_parquet(pipeline.data / "warehouse" / "rejected_events")
    assert list(dead["source_line"]) == [2, 4]
    assert set(dead["reason"]) == {"invalid_json"} and dead["detail"].str.contains("nesting is too deep").all()
    assert dead["raw_text"][0] == deep.decode()
