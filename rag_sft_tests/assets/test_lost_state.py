"""A state folder lost after days were exported and requests erased: the next run of any day
refuses, naming the cause and the fix, until `rag-sft state rebuild`; then erased requests stay
out and duplicates and near-duplicates of earlier days are found again, as before the loss."""

import json
import shutil

import dagster as dg
import pandas as pd
import pytest

from rag_sft_tests.assets.test_erasure_gaps import erase
from rag_sft_tests.assets.test_near_duplicates import DAY1, DAY2, LATER_TOPICS, distinct_events
from rag_sft_tests.cli.test_erasure import cli_pipeline, rag_sft  # noqa: F401 (a fixture)
from rag_sft_tests.helpers import write_lines

DAY3 = "2026-11-20"


def refusal(result: dg.ExecuteInProcessResult) -> str:
    assert not result.success
    [failure] = [event for event in result.all_events if event.is_step_failure]
    return failure.step_failure_data.error.to_string()


def test_a_lost_state_folder_refuses_runs_until_rebuilt_then_erased_requests_stay_out_and_duplicates_are_found(
    cli_pipeline,
):
    pipeline = cli_pipeline
    first = distinct_events(DAY1, "a")
    write_lines(pipeline.landing / "day1.jsonl", first)
    write_lines(pipeline.landing / "day2.jsonl", distinct_events(DAY2, "b", LATER_TOPICS))
    re_emitted = {**first[1], "timestamp": f"{DAY3}T09:00:00Z"}  # request a1 shipped again
    asked_again = {**first[2], "request_id": "c-again", "timestamp": f"{DAY3}T08:00:00Z", "question": "会员积分的具体规则是什么"}
    late_erased = {**first[3], "timestamp": f"{DAY3}T10:00:00Z"}  # a late copy of a request erased before
    write_lines(pipeline.landing / "day3.jsonl", [re_emitted, asked_again, late_erased, *distinct_events(DAY3, "c", ["电子合同"])])
    pipeline.materialize(DAY1)
    pipeline.materialize(DAY2)
    erase(pipeline, "a3", "b0")
    expected = pipeline.materialize(DAY3)
    expected_records = pipeline.jsonl(DAY3).read_bytes()
    expected_raw = pipeline.metadata(expected, "raw_events")
    assert (expected_raw["duplicates"], expected_raw["erased"]) == (1, 1)
    assert pipeline.metadata(expected, "sft_records")["near_duplicates"]["across_days"] == 1

    shutil.rmtree(pipeline.data / "state")  # lost between days
    for day in (DAY3, DAY1):  # a later day, and one whose own rows the state held
        message = refusal(pipeline.materialize(day, raise_on_error=False))
        assert "younger than the data it describes" in message and "`rag-sft state rebuild`" in message
        assert f"after {DAY1} was exported" in message
        assert "erasure ledger was created" in message and "near-duplicate index was created" in message
    assert pipeline.jsonl(DAY3).read_bytes() == expected_records  # nothing published meanwhile

    report = json.loads(rag_sft(pipeline, "state", "rebuild").splitlines()[-1])
    assert (report["erase_runs"], report["erased_request_ids"], report["days"]) == (1, 2, 3)
    assert report["exported_requests"] == 10 - 1 + 5 - 1 + expected_raw["accepted"] - 1  # a3, b0 erased; c-again set aside

    day3 = pipeline.materialize(DAY3)
    raw = pipeline.metadata(day3, "raw_events")
    assert (raw["duplicates"], raw["erased"]) == (1, 1)  # a1 first seen on DAY1; a3 erased
    assert pipeline.metadata(day3, "sft_records")["near_duplicates"]["across_days"] == 1  # c-again is a2 retyped
    assert pipeline.jsonl(DAY3).read_bytes() == expected_records
    records = pd.read_json(pipeline.jsonl(DAY3), lines=True)["request_id"].tolist()
    assert "a3" not in records and "a1" not in records and "c-again" not in records
    day2 = pipeline.materialize(DAY2)  # the erased b0 stays out of its own day too
    assert pipeline.metadata(day2, "raw_events")["erased"] == 1


@pytest.mark.parametrize("lost", ["erasure.sqlite", "request-days.sqlite"])
def test_one_lost_store_is_named(pipeline, lost):
    write_lines(pipeline.landing / "day1.jsonl", distinct_events(DAY1, "a"))
    pipeline.materialize(DAY1)
    erase(pipeline, "a3")
    for part in ("", "-wal", "-shm"):
        (pipeline.data / "state" / f"{lost}{part}").unlink(missing_ok=True)
    message = refusal(pipeline.materialize(DAY1, raise_on_error=False))
    named = {"erasure.sqlite": "erasure ledger was created", "request-days.sqlite": "request index was created"}
    assert [name for name, says in named.items() if says in message] == [lost]
