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


# --- label mix (a monitor: WARN, never holds a day back) --------------------------------------
WEIGHTS = {"factuality_error": 1.7, "incomplete_answer": 1.9, "low_relevance": 2.2}
# Real traffic: about 90% of the low scores are factuality errors.
SKEWED = {"factuality_error": 900, "incomplete_answer": 60, "low_relevance": 40}
BALANCED = {"factuality_error": 400, "incomplete_answer": 350, "low_relevance": 250}


def test_a_day_skewed_like_real_traffic_passes_with_its_numbers_and_never_holds_back():
    first = checks.label_mix_verdict(SKEWED, {}, 0, WEIGHTS, DEFAULTS)  # no trailing day yet
    assert first.passed and not first.holds_back and first.severity == checks.WARN
    assert "factuality_error 90.0%" in first.description and "not compared" in first.description
    usual = checks.label_mix_verdict(SKEWED, {"factuality_error": 2600, "incomplete_answer": 250, "low_relevance": 150}, 3, WEIGHTS, DEFAULTS)
    assert usual.passed and not usual.holds_back, usual.description
    assert usual.metadata["labels"][0] == {
        "label": "factuality_error", "count": 900, "share": 0.9, "trailing_share": 0.8667, "label_weight": 1.7
    }


def test_a_jump_of_the_mix_against_the_trailing_days_warns_with_the_numbers():
    verdict = checks.label_mix_verdict(SKEWED, BALANCED, 7, WEIGHTS, DEFAULTS)
    assert not verdict.passed and verdict.severity == checks.WARN and not verdict.holds_back
    assert "factuality_error 90.0% of 1000 records against 40.0% over the 7 trailing days (1000 records), +50.0 points" in (
        verdict.description
    )
    assert "max_label_mix_change 20 points" in verdict.description
    assert verdict.metadata["largest_change_label"] == "factuality_error"
    assert verdict.metadata["largest_change_points"] == 50.0
    # Configurable: a larger tolerance lets the same change through.
    assert checks.label_mix_verdict(SKEWED, BALANCED, 7, WEIGHTS, CheckSettings(max_label_mix_change=0.6)).passed


def test_a_label_that_disappears_counts_as_a_change():
    verdict = checks.label_mix_verdict({"factuality_error": 100}, {"factuality_error": 50, "low_relevance": 50}, 1, {}, DEFAULTS)
    assert not verdict.passed and not verdict.holds_back
    assert (verdict.metadata["largest_change_label"], verdict.metadata["largest_change_points"]) == ("low_relevance", -50.0)


def test_a_small_day_passes_with_a_note():
    verdict = checks.label_mix_verdict({"factuality_error": 40, "low_relevance": 1}, BALANCED, 7, WEIGHTS, DEFAULTS)
    assert verdict.passed and "too small to judge" in verdict.description and "41" in verdict.description


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
