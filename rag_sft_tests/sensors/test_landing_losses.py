"""A processed landing file that goes away never turns into a day with fewer events by itself:
the change sensor's run fails naming the file and the day's outputs stay; a person accepts the
loss (the CLI or the launchpad flag) and only then is the day published smaller."""

from datetime import date

import dagster as dg

from rag_sft.core.generator import GeneratorSettings, day_lines
from rag_sft.jobs import DAILY_JOB
from rag_sft_tests.conftest import ALL_ASSETS
from rag_sft_tests.helpers import event, write_lines
from rag_sft_tests.sensors.test_source_changes import definitions, launch, run_requests, tick

DAY = "2026-11-18"


def exported_lines(pipeline, day: str) -> int:
    return len(pipeline.jsonl(day).read_text().splitlines())


def test_a_deleted_file_fails_its_day_and_keeps_its_export_until_the_loss_is_accepted(pipeline):
    realistic = [line.rstrip(b"\n") for line in day_lines(date.fromisoformat(DAY), GeneratorSettings(events_per_day=60))]
    write_lines(pipeline.landing / "events.jsonl", realistic)
    write_lines(pipeline.landing / "other.jsonl", [event("b", "2026-11-19T10:00:00Z")])
    first, cursor = tick(pipeline, None)
    for request in run_requests(first).values():
        assert launch(pipeline, request).success
    exported = exported_lines(pipeline, DAY)
    assert exported > 10

    (pipeline.landing / "events.jsonl").unlink()
    changed, cursor = tick(pipeline, cursor)
    [(day, request)] = run_requests(changed).items()
    assert day == DAY
    job_result = launch_without_raising(pipeline, request)
    assert not job_result.success
    [failure] = [e for e in job_result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE]
    message = failure.step_failure_data.user_failure_data.description
    assert "events.jsonl" in message and "held 60" in message and "rag-sft landing accept-loss 2026-11-18" in message
    assert exported_lines(pipeline, DAY) == exported  # nothing replaced
    again, cursor = tick(pipeline, cursor)
    assert run_requests(again) == {}  # refused once; not asked again and again

    resources = pipeline.resources()  # what `rag-sft landing accept-loss 2026-11-18` does
    resources["event_source"].open(resources["warehouse"].state_dir()).accept_loss(date.fromisoformat(DAY))
    accepted, cursor = tick(pipeline, cursor)
    [(day, request)] = run_requests(accepted).items()
    result = launch(pipeline, request)
    assert result.success and pipeline.metadata(result, "raw_events")["events_read"] == 0
    assert exported_lines(pipeline, DAY) == 0


def test_the_launchpad_flag_accepts_the_loss_for_one_run(pipeline):
    write_lines(pipeline.landing / "events.jsonl", [event(f"a{i}", f"{DAY}T10:00:00Z") for i in range(5)])
    write_lines(pipeline.landing / "late.jsonl", [event("late", f"{DAY}T11:00:00Z")])
    assert pipeline.materialize(DAY).success
    (pipeline.landing / "events.jsonl").unlink()
    refused = pipeline.materialize(DAY, raise_on_error=False)
    assert not refused.success
    accepted = dg.materialize(
        ALL_ASSETS,
        partition_key=DAY,
        instance=pipeline.instance,
        resources=pipeline.resources(),
        run_config={"ops": {"raw_events": {"config": {"accept_source_loss": True}}}},
    )
    assert pipeline.metadata(accepted, "raw_events")["events_read"] == 1


def test_files_that_are_not_json_lines_are_named_in_the_days_metadata(pipeline):
    write_lines(pipeline.landing / "a.jsonl", [event("a", f"{DAY}T10:00:00Z")])
    write_lines(pipeline.landing / "c.json", [event("c", f"{DAY}T10:00:00Z")])
    result = pipeline.materialize(DAY, selection=["raw_events", "rejected_events"])
    metadata = pipeline.metadata(result, "raw_events")
    assert metadata["ignored_landing_files"] == 1 and metadata["ignored_landing_file_names"] == ["c.json"]


def launch_without_raising(pipeline, request: dg.RunRequest) -> dg.ExecuteInProcessResult:
    job = definitions(pipeline).resolve_job_def(DAILY_JOB)
    return job.execute_in_process(
        partition_key=request.partition_key, instance=pipeline.instance, tags=request.tags, raise_on_error=False
    )


def test_a_rotated_copy_beside_its_original_counts_its_events_once(pipeline):
    write_lines(pipeline.landing / "events.jsonl", [event(f"a{i}", f"{DAY}T10:00:00Z") for i in range(5)])
    (pipeline.landing / "events.jsonl.1").write_bytes((pipeline.landing / "events.jsonl").read_bytes())
    metadata = pipeline.metadata(pipeline.materialize(DAY, selection=["raw_events", "rejected_events"]), "raw_events")
    assert (metadata["events_read"], metadata["accepted"], metadata["duplicates"]) == (10, 5, 5)
