"""The export gate on a real instance: a bad day is held back, visibly, and leaves no JSONL."""

import dagster as dg
import pandas as pd

from rag_sft_tests.assets.test_pipeline import generate
from rag_sft_tests.helpers import event, write_lines

DAY = "2026-11-19"
LABELS = ["factuality_error", "incomplete_answer", "low_relevance", "overconfidence"]


def test_a_balanced_day_passes_every_check_and_is_published(pipeline):
    generate(pipeline, days=[DAY], events_per_day=300)
    result = pipeline.materialize(DAY)
    for name in ("confidence", "label_balance", "export_format"):
        evaluation = pipeline.check(result, name)
        assert evaluation.passed, evaluation.description
    assert pipeline.metadata(result, "sft_records")["export"] == "ok"
    assert pipeline.metadata(result, "sft_jsonl")["published"] is True
    assert pipeline.jsonl(DAY).exists()
    balance = pipeline.check(result, "label_balance").metadata
    shown = {row.data["label"]: row.data for row in balance["labels"].value.records}
    records = pipeline.metadata(result, "sft_records")
    assert sum(row["count"] for row in shown.values()) == records["exported"]
    assert round(shown["factuality_error"]["label_weight"], 4) == records["label_weight/factuality_error"]
    assert records["day_held_back"] == 0 and "rag_sft/held_back" not in pipeline.instance.get_run_by_id(result.run_id).tags


def test_a_day_skewed_like_real_traffic_exports_a_balanced_subset_the_same_on_every_run(pipeline):
    generate(pipeline, days=[DAY], events_per_day=1500, factuality_share=0.9)
    result = pipeline.materialize(DAY)
    balance = pipeline.check(result, "label_balance")
    assert balance.passed, balance.description
    records = pipeline.metadata(result, "sft_records")
    assert records["rebalance"].startswith("capped factuality_error ")
    assert records["accepted"] == records["exported"] + records["filtered"] and records["held_back"] == 0
    assert records["exported"] == balance.metadata["records"].value >= 50
    rows = pd.read_parquet(pipeline.data / "warehouse" / "sft_records")
    capped = rows[rows["filter_reason"] == "label_cap"]
    reasons = {row.data["reason"]: row.data["count"] for row in records["filter_reasons"].value.records}
    assert len(capped) == reasons["label_cap"] > 0 and set(capped["label"]) == {"factuality_error"}
    assert (capped["status"] == "filtered").all() and capped["completion"].isna().all()
    assert (capped["confidence"] >= 0.6).all()  # set aside for balance, not for confidence
    exported = rows[rows["status"] == "exported"]
    others = rows[(rows["label"] != "factuality_error") & (rows["confidence"] >= 0.6)]
    assert set(others["sample_id"]) <= set(exported["sample_id"])  # no other label loses a record
    first = pipeline.jsonl(DAY).read_bytes()

    assert pipeline.materialize(DAY).success
    assert pipeline.jsonl(DAY).read_bytes() == first  # the same subset on a re-run


def test_with_rebalancing_off_a_skewed_day_is_held_back(pipeline):
    generate(pipeline, days=[DAY], events_per_day=1500, factuality_share=0.9)
    result = pipeline.materialize(DAY, raise_on_error=False, checks={"rebalance": False})
    assert pipeline.instance.get_run_by_id(result.run_id).tags["rag_sft/held_back"] == "label_balance"
    assert pipeline.metadata(result, "sft_records")["rebalance"] == "off"
    assert "factuality_error is" in pipeline.check(result, "label_balance").description


def test_a_skewed_day_whose_balanced_subset_is_too_small_is_held_back_and_its_old_jsonl_removed(pipeline):
    generate(pipeline, days=[DAY], events_per_day=300)
    pipeline.materialize(DAY)
    assert pipeline.jsonl(DAY).exists()

    generate(pipeline, days=[DAY], events_per_day=300, factuality_share=0.95)  # the day's events change
    result = pipeline.materialize(DAY, raise_on_error=False)
    # The gate worked: the run succeeds, tagged with the checks that held the day back.
    assert result.success
    assert pipeline.instance.get_run_by_id(result.run_id).tags["rag_sft/held_back"] == "label_balance"
    assert pipeline.metadata(result, "sft_records")["rebalance"].startswith("cannot balance")
    balance = pipeline.check(result, "label_balance")
    assert not balance.passed and balance.severity == dg.AssetCheckSeverity.ERROR
    assert balance.partition == DAY
    assert "factuality_error is" in balance.description and "above max_label_share 60%" in balance.description
    assert not pipeline.jsonl(DAY).exists() and not pipeline.jsonl(DAY).parent.exists()
    records = pipeline.metadata(result, "sft_records")
    assert records["export"].startswith("held back: label_balance") and records["day_held_back"] == 1
    # sft_jsonl says the day is not published and why; its format is not evaluated (no file).
    export = pipeline.metadata(result, "sft_jsonl")
    assert (export["published"], export["dagster/row_count"]) == (False, 0) and "path" not in export
    assert export["export"].startswith("held back: label_balance: factuality_error is")
    assert "export_format" not in {evaluation.check_name for evaluation in result.get_asset_check_evaluations()}

    # Visible on the instance as the latest evaluation of the check, with the reason.
    record = pipeline.instance.event_log_storage.get_latest_asset_check_execution_by_key(
        [dg.AssetCheckKey(dg.AssetKey("sft_records"), "label_balance")]
    )[dg.AssetCheckKey(dg.AssetKey("sft_records"), "label_balance")]
    assert record.status.value == "FAILED" and record.run_id == result.run_id

    # Its records say they were held back and by which check; none counts as exported.
    judged = balance.metadata["records"].value
    assert (records["exported"], records["held_back"]) == (0, judged) and judged > 0
    assert records["accepted"] == records["exported"] + records["filtered"] + records["held_back"]
    rows = pd.read_parquet(pipeline.data / "warehouse" / "sft_records")
    assert rows["status"].value_counts().to_dict() == {"held_back": judged, "filtered": records["filtered"]}
    assert set(rows.loc[rows["status"] == "held_back", "held_back_by"]) == {"label_balance"}
    assert rows.loc[rows["status"] == "filtered", "held_back_by"].isna().all()


def test_sft_jsonl_alone_publishes_nothing_for_a_held_back_day_until_the_day_is_fixed(pipeline):
    generate(pipeline, days=[DAY], events_per_day=300, factuality_share=0.95)
    pipeline.materialize(DAY)

    alone = pipeline.materialize(DAY, selection="sft_jsonl")  # one click in the UI
    export = pipeline.metadata(alone, "sft_jsonl")
    assert export["published"] is False and "label_balance: factuality_error is" in export["export"]
    assert not alone.get_asset_check_evaluations()
    assert not pipeline.jsonl(DAY).parent.exists()  # nothing written

    # Fixed with the check at WARN: sft_records is re-materialized, then sft_jsonl alone publishes.
    pipeline.materialize(DAY, selection="sft_records", checks={"label_balance_severity": "WARN"})
    published = pipeline.materialize(DAY, selection="sft_jsonl")
    records = pipeline.instance.fetch_materializations(dg.AssetKey("sft_records"), limit=1).records[0]
    exported = records.asset_materialization.metadata["exported"].value
    assert pipeline.metadata(published, "sft_jsonl")["published"] is True
    assert len(pipeline.jsonl(DAY).read_bytes().splitlines()) == exported > 0

    # Held back again, then fixed by balanced events: the same.
    pipeline.materialize(DAY, selection="sft_records")
    assert not pipeline.jsonl(DAY).exists()
    assert pipeline.metadata(pipeline.materialize(DAY, selection="sft_jsonl"), "sft_jsonl")["published"] is False
    generate(pipeline, days=[DAY], events_per_day=300)
    pipeline.materialize(DAY, selection=["raw_events", "rejected_events", "annotated_samples", "sft_records"])
    assert pipeline.materialize(DAY, selection="sft_jsonl").success and pipeline.jsonl(DAY).exists()


def test_the_warn_setting_lets_a_skewed_day_through_flagged(pipeline):
    generate(pipeline, days=[DAY], events_per_day=300, factuality_share=0.95)
    result = pipeline.materialize(DAY, checks={"label_balance_severity": "WARN"})
    assert result.success
    balance = pipeline.check(result, "label_balance")
    assert not balance.passed and balance.severity == dg.AssetCheckSeverity.WARN
    assert pipeline.jsonl(DAY).exists()
    assert len(pipeline.jsonl(DAY).read_bytes().splitlines()) == pipeline.metadata(result, "sft_records")["exported"]


def test_a_small_day_passes_label_balance_with_a_note(pipeline):
    write_lines(pipeline.landing / "e.jsonl", [event(f"r{n}", labels=["factuality_error"]) for n in range(20)])
    result = pipeline.materialize(DAY)
    balance = pipeline.check(result, "label_balance")
    assert balance.passed and "too small to judge" in balance.description
    assert pipeline.jsonl(DAY).exists()


def test_a_day_of_mostly_low_scores_warns_on_confidence_and_is_exported(pipeline):
    lines = [event(f"r{n}", score=0.2 if n % 10 < 7 else 0.6, labels=[LABELS[n % 4]]) for n in range(200)]
    write_lines(pipeline.landing / "e.jsonl", lines)
    result = pipeline.materialize(DAY)
    confidence = pipeline.check(result, "confidence")
    assert not confidence.passed and confidence.severity == dg.AssetCheckSeverity.WARN
    assert "140 of 200 accepted events (70.0%) were filtered" in confidence.description
    assert confidence.metadata["mean_exported_confidence"].value == 0.9
    assert pipeline.jsonl(DAY).exists()
