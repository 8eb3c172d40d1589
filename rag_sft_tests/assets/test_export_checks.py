"""The export gate on a real instance: a bad day is held back, visibly, and leaves no JSONL."""

import dataclasses

import dagster as dg
import pandas as pd

from rag_sft_tests.assets.test_pipeline import generate
from rag_sft_tests.conftest import DAILY_ASSETS
from rag_sft_tests.helpers import HELD_BACK_BY_TEST, event, hold_back_days, write_lines

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


def test_a_day_skewed_like_real_traffic_is_exported_in_full(pipeline):
    generate(pipeline, days=[DAY], events_per_day=1500, factuality_share=0.9)
    result = pipeline.materialize(DAY)
    balance = pipeline.check(result, "label_balance")
    # A monitor: it passes (no trailing day to compare with) or warns, with the numbers; never ERROR.
    assert balance.severity == dg.AssetCheckSeverity.WARN and "factuality_error 9" in balance.description
    records = pipeline.metadata(result, "sft_records")
    assert records["export"] == "ok" and records["held_back"] == 0 and records["day_held_back"] == 0
    assert records["accepted"] == records["exported"] + records["filtered"]
    reasons = {row.data["reason"] for row in records["filter_reasons"].value.records}
    assert "label_cap" not in reasons  # nothing set aside for balance on a day
    rows = pd.read_parquet(pipeline.data / "warehouse" / "sft_records")
    confident = rows[(rows["confidence"] >= 0.6) & rows["filter_reason"].isna()]
    assert (confident["status"] == "exported").all() and len(confident) == records["exported"]
    assert (confident["label"] == "factuality_error").mean() > 0.8
    assert len(pipeline.jsonl(DAY).read_bytes().splitlines()) == records["exported"] == balance.metadata["records"].value


def test_a_jump_of_the_label_mix_against_the_trailing_days_warns_and_the_day_is_exported(pipeline):
    days = ["2026-11-16", "2026-11-17", "2026-11-18", DAY]
    generate(pipeline, days=days[:3], events_per_day=300)
    generate(pipeline, days=[DAY], events_per_day=300, factuality_share=0.95)
    for day in days[:3]:
        assert pipeline.check(pipeline.materialize(day), "label_balance").passed
    result = pipeline.materialize(DAY)
    balance = pipeline.check(result, "label_balance")
    assert not balance.passed and balance.severity == dg.AssetCheckSeverity.WARN and balance.partition == DAY
    assert "the label mix jumped: factuality_error 9" in balance.description
    assert "over the 3 trailing days" in balance.description and "max_label_mix_change 20 points" in balance.description
    assert balance.metadata["trailing_days"].value == 3 and balance.metadata["largest_change_points"].value > 20
    assert pipeline.metadata(result, "sft_records")["export"] == "ok" and pipeline.jsonl(DAY).exists()
    assert "rag_sft/held_back" not in pipeline.instance.get_run_by_id(result.run_id).tags


def _failure(result: dg.ExecuteInProcessResult, step: str):
    [failure] = [event for event in result.all_events if event.is_step_failure and event.step_key == step]
    return failure.event_specific_data.user_failure_data


def _withdrawals(pipeline, day: str) -> list[dict]:
    records = pipeline.instance.fetch_observations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("sft_jsonl"), asset_partitions=[day]), limit=10
    ).records
    return [{key: value.value for key, value in r.asset_observation.metadata.items()} for r in records]


def test_a_held_back_day_leaves_no_jsonl_and_fails_saying_why(pipeline, monkeypatch):
    generate(pipeline, days=[DAY], events_per_day=300)
    pipeline.materialize(DAY)
    assert pipeline.jsonl(DAY).exists()

    hold_back_days(monkeypatch)  # a check that fails at ERROR (the label mix never does)
    result = pipeline.materialize(DAY, raise_on_error=False)
    # Nothing shipped, so the run fails: sft_jsonl fails its step on purpose, saying why; the run
    # is tagged with the checks that held the day back and is not retried by run retries.
    assert not result.success
    assert pipeline.instance.get_run_by_id(result.run_id).status == dg.DagsterRunStatus.FAILURE
    tags = pipeline.instance.get_run_by_id(result.run_id).tags
    assert tags["rag_sft/held_back"] == "confidence" and tags["dagster/retry_on_asset_or_op_failure"] == "false"
    failure = _failure(result, "sft_jsonl")
    assert failure.metadata["held_back_by"].value == "confidence" and failure.metadata["published"].value is False
    assert HELD_BACK_BY_TEST in failure.description and "held back from export" in failure.description
    assert not [event for event in result.all_events if event.is_step_failure and event.step_key != "sft_jsonl"]
    confidence = pipeline.check(result, "confidence")
    assert not confidence.passed and confidence.severity == dg.AssetCheckSeverity.ERROR
    assert confidence.partition == DAY
    assert not pipeline.jsonl(DAY).exists() and not pipeline.jsonl(DAY).parent.exists()
    records = pipeline.metadata(result, "sft_records")
    assert records["export"] == f"held back: {HELD_BACK_BY_TEST}" and records["day_held_back"] == 1
    # sft_jsonl is not materialized (the partition reads Failed); its withdrawal is observed, and
    # its format is not evaluated (no file).
    assert "sft_jsonl" not in {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    assert _withdrawals(pipeline, DAY)[0] == {"published": False, "export": f"held back: {HELD_BACK_BY_TEST}"}
    assert "export_format" not in {evaluation.check_name for evaluation in result.get_asset_check_evaluations()}
    assert not [line for line in _log_messages(pipeline, result.run_id) if "expected outputs" in line]

    # Visible on the instance as the latest evaluation of the check, with the reason.
    key = dg.AssetCheckKey(dg.AssetKey("sft_records"), "confidence")
    record = pipeline.instance.event_log_storage.get_latest_asset_check_execution_by_key([key])[key]
    assert record.status.value == "FAILED" and record.run_id == result.run_id

    # Its records say they were held back and by which check; none counts as exported.
    judged = confidence.metadata["exported"].value
    assert (records["exported"], records["held_back"]) == (0, judged) and judged > 0
    assert records["accepted"] == records["exported"] + records["filtered"] + records["held_back"]
    rows = pd.read_parquet(pipeline.data / "warehouse" / "sft_records")
    assert rows["status"].value_counts().to_dict() == {"held_back": judged, "filtered": records["filtered"]}
    assert set(rows.loc[rows["status"] == "held_back", "held_back_by"]) == {"confidence"}
    assert rows.loc[rows["status"] == "filtered", "held_back_by"].isna().all()


def _log_messages(pipeline, run_id: str) -> list[str]:
    return [entry.user_message for entry in pipeline.instance.all_logs(run_id)]


def test_sft_jsonl_alone_publishes_nothing_for_a_held_back_day_until_the_day_is_fixed(pipeline, monkeypatch):
    generate(pipeline, days=[DAY], events_per_day=300)
    with monkeypatch.context() as patched:
        hold_back_days(patched)
        pipeline.materialize(DAY, raise_on_error=False)

        alone = pipeline.materialize(DAY, selection="sft_jsonl", raise_on_error=False)  # one click in the UI
        assert not alone.success
        failure = _failure(alone, "sft_jsonl")
        assert failure.metadata["held_back_by"].value == "confidence" and HELD_BACK_BY_TEST in failure.description
        assert not alone.get_asset_check_evaluations() and not alone.get_asset_materialization_events()
        assert not pipeline.jsonl(DAY).parent.exists()  # nothing written

    # Fixed (the check passes again): sft_records is re-materialized, then sft_jsonl alone publishes.
    pipeline.materialize(DAY, selection="sft_records")
    published = pipeline.materialize(DAY, selection="sft_jsonl")
    records = pipeline.instance.fetch_materializations(dg.AssetKey("sft_records"), limit=1).records[0]
    exported = records.asset_materialization.metadata["exported"].value
    assert pipeline.metadata(published, "sft_jsonl")["published"] is True
    assert len(pipeline.jsonl(DAY).read_bytes().splitlines()) == exported > 0


def test_a_format_failure_at_error_withdraws_a_published_day_from_the_ledger(pipeline, monkeypatch):
    from rag_sft.core import checks
    from rag_sft.core.trigger import ExportLedger
    from rag_sft.io.state.export_ledger import update_ledger

    generate(pipeline, days=[DAY], events_per_day=300)
    pipeline.materialize(DAY)
    assert DAY in update_ledger(pipeline.instance, ExportLedger()).exportable()
    ledger = update_ledger(pipeline.instance, ExportLedger())  # a sensor's ledger, folded on below

    real = checks.export_format_verdict
    monkeypatch.setattr(
        checks, "export_format_verdict", lambda *a: dataclasses.replace(real(*a), passed=False, description="export_format: bad")
    )
    alone = pipeline.materialize(DAY, selection="sft_jsonl", raise_on_error=False)  # sft_records untouched
    assert not alone.success and _failure(alone, "sft_jsonl").metadata["held_back_by"].value == "export_format"
    evaluation = pipeline.check(alone, "export_format")  # evaluated (failed at ERROR) before the step failed
    assert not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.ERROR
    assert not pipeline.jsonl(DAY).exists()
    # The earlier publication no longer counts: not for a new ledger, nor for one folded on.
    assert DAY not in update_ledger(pipeline.instance, ExportLedger()).exportable()
    assert DAY not in update_ledger(pipeline.instance, ledger).exportable()


def test_make_run_reports_a_held_back_day_as_held_back_and_a_warned_day_as_warned(pipeline, monkeypatch):
    from rag_sft.cli.runner import format_summary, materialize_day
    from rag_sft.jobs import DAILY_JOB, daily_sft_job

    job = dg.Definitions(assets=DAILY_ASSETS, jobs=[daily_sft_job], resources=pipeline.resources()).resolve_job_def(DAILY_JOB)
    lines = [event(f"r{n}", score=0.2 if n % 10 < 7 else 0.6, labels=[LABELS[n % 4]]) for n in range(200)]
    write_lines(pipeline.landing / "e.jsonl", lines)  # mostly low scores: confidence warns
    warned = materialize_day(job, DAY, pipeline.instance)
    assert (warned.status, warned.success, warned.failure) == ("warned", True, None)

    hold_back_days(monkeypatch)
    held = materialize_day(job, DAY, pipeline.instance)
    assert (held.status, held.failure, held.held_back) == ("held back", None, [HELD_BACK_BY_TEST])
    assert held.counts["held_back"] > 0 and "sft_jsonl" not in held.paths
    summary = format_summary([held])
    assert f"  {DAY}: {HELD_BACK_BY_TEST}" in summary and "Days that failed" not in summary


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
