"""The export gate's rules: each passes on a good day and fails, with its numbers, on a bad one."""

import orjson
import pytest

from rag_sft.core import checks, samples
from rag_sft.core.checks import CheckSettings

DEFAULTS = CheckSettings()


# --- confidence -------------------------------------------------------------------------------
def test_confidence_passes_when_every_exported_record_clears_the_floor():
    verdict = checks.confidence_verdict([0.6, 0.75, 0.9], accepted=4, filtered_low_confidence=1, settings=DEFAULTS)
    assert verdict.passed and not verdict.holds_back
    assert verdict.metadata["mean_exported_confidence"] == pytest.approx(0.75)
    assert verdict.metadata["filtered_share"] == 0.25


def test_a_record_below_the_floor_fails_at_error_naming_the_numbers():
    verdict = checks.confidence_verdict([0.9, 0.55, 0.7], accepted=3, filtered_low_confidence=0, settings=DEFAULTS)
    assert not verdict.passed and verdict.severity == checks.ERROR and verdict.holds_back
    assert "1 of 3 exported records are below min_confidence 0.6" in verdict.description
    assert "0.5500" in verdict.description


def test_the_confidence_severity_can_be_warn():
    settings = CheckSettings(confidence_severity=checks.WARN)
    verdict = checks.confidence_verdict([0.55], accepted=1, filtered_low_confidence=0, settings=settings)
    assert not verdict.passed and not verdict.holds_back and verdict.severity == checks.WARN


def test_filtering_most_accepted_events_warns_without_holding_back():
    verdict = checks.confidence_verdict([0.8] * 40, accepted=100, filtered_low_confidence=60, settings=DEFAULTS)
    assert not verdict.passed and verdict.severity == checks.WARN and not verdict.holds_back
    assert "60 of 100 accepted events (60.0%)" in verdict.description and "max_filtered_share 50%" in verdict.description


def test_a_day_with_nothing_exported_passes_confidence():
    verdict = checks.confidence_verdict([], accepted=0, filtered_low_confidence=0, settings=DEFAULTS)
    assert verdict.passed and verdict.metadata["mean_exported_confidence"] is None


# --- label balance ----------------------------------------------------------------------------
WEIGHTS = {"factuality_error": 1.7, "incomplete_answer": 1.9, "low_relevance": 2.2}


def test_a_balanced_day_passes_and_shows_counts_shares_and_weights():
    counts = {"factuality_error": 40, "incomplete_answer": 35, "low_relevance": 25}
    verdict = checks.label_balance_verdict(counts, WEIGHTS, DEFAULTS)
    assert verdict.passed
    assert verdict.metadata["labels"][0] == {"label": "factuality_error", "count": 40, "share": 0.4, "label_weight": 1.7}
    assert verdict.metadata["imbalance_ratio"] == 1.6


def test_a_day_skewed_like_real_traffic_is_held_back():
    counts = {"factuality_error": 950, "incomplete_answer": 30, "low_relevance": 20}
    verdict = checks.label_balance_verdict(counts, WEIGHTS, DEFAULTS)
    assert verdict.holds_back
    assert "factuality_error is 95.0% of 1000 exported records, above max_label_share 60%" in verdict.description
    assert "47.5 times low_relevance (20), above max_imbalance_ratio 10" in verdict.description


def test_imbalance_ratio_alone_fails_the_day():
    counts = {"factuality_error": 60, "incomplete_answer": 45, "citation_missing": 5}
    verdict = checks.label_balance_verdict(counts, WEIGHTS, DEFAULTS)
    assert not verdict.passed and "max_label_share" not in verdict.description
    assert "12.0 times citation_missing (5)" in verdict.description


def test_skewed_traffic_with_the_warn_setting_goes_through_flagged():
    settings = CheckSettings(label_balance_severity=checks.WARN)
    verdict = checks.label_balance_verdict({"factuality_error": 95, "low_relevance": 5}, WEIGHTS, settings)
    assert not verdict.passed and verdict.severity == checks.WARN and not verdict.holds_back


def test_a_small_day_passes_with_a_note():
    verdict = checks.label_balance_verdict({"factuality_error": 40, "low_relevance": 1}, WEIGHTS, DEFAULTS)
    assert verdict.passed and "too small to judge" in verdict.description and "41" in verdict.description


def test_thresholds_are_configurable():
    counts = {"factuality_error": 70, "low_relevance": 30}
    assert not checks.label_balance_verdict(counts, WEIGHTS, DEFAULTS).passed
    assert checks.label_balance_verdict(counts, WEIGHTS, CheckSettings(max_label_share=0.75)).passed


# --- export format ----------------------------------------------------------------------------
def record(**changes):
    value = {
        "prompt": "[文档1] 退款在七个工作日内到账。\n\n请严格依据文档回答。\n\n# 问题\n退款需要多久?",
        "completion": "【纠正】七个工作日内到账。",
        "label": "factuality_error",
        "confidence": 0.9,
        "score": 0.6,
        "sample_weight": 1.8,
        "label_weight": 2.1,
        "sample_id": "r1_factuality_error",
        "request_id": "r1",
        "date": "2026-11-19",
        "question": "退款需要多久?",
        "completion_strategy": "naive",
        "completion_model": "",
    }
    value.update(changes)
    return orjson.dumps({k: v for k, v in value.items() if v is not ...})


def test_valid_lines_pass_the_format_check():
    report = checks.check_jsonl_lines([record(), record(request_id="r2", completion_model="m")], "2026-11-19")
    verdict = checks.export_format_verdict(report, DEFAULTS.export_format_severity)
    assert verdict.passed and report.lines == 2 and "all 2 lines" in verdict.description


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        (b'{"prompt": "x"', "not_json"),
        (b"", "not_json"),
        (record(label=...), "wrong_field"),
        (record(confidence="0.9"), "wrong_field"),
        (record(completion_model=3), "wrong_field"),
        (record(completion_model=None), "wrong_field"),  # null on one day, text on another: not one dataset
        (record(prompt=" "), "empty_text"),
        (record(completion=""), "empty_text"),
        (record(question="别的问题"), "question_not_in_prompt"),
        (record(date="2026-11-18"), "wrong_date"),
    ],
)
def test_each_format_problem_is_counted_with_its_line(line, problem):
    report = checks.check_jsonl_lines([record(), line, record()], "2026-11-19")
    assert dict(report.problems) == {problem: 1}
    assert report.examples[0][0] == 2
    verdict = checks.export_format_verdict(report, DEFAULTS.export_format_severity)
    assert verdict.holds_back and f"1 of 3 lines are not valid records ({problem} 1)" in verdict.description
    assert "first at line 2" in verdict.description


def test_the_format_check_requires_exactly_the_exported_fields():
    assert checks._JsonlRecord.__struct_fields__ == samples.JSONL_FIELDS
