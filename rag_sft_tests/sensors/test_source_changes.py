"""The daily schedule and the change sensor on a real instance: closed days run once, a late file
re-runs its day and only it, an unchanged source asks for nothing, a re-evaluated tick asks for
the same run."""

from datetime import UTC, datetime

import dagster as dg

from rag_sft.jobs import DAILY_JOB, FINGERPRINT_TAG, daily_sft_job
from rag_sft.schedules.daily import daily_sft_schedule
from rag_sft.sensors.source_changes import source_change_sensor
from rag_sft_tests.conftest import DAILY_ASSETS, Pipeline
from rag_sft_tests.helpers import event, write_lines
from rag_sft_tests.io.test_landing_s3 import upload


def tick(pipeline, cursor):
    resources = pipeline.resources()
    with dg.build_sensor_context(
        instance=pipeline.instance,
        cursor=cursor,
        resources={"event_source": resources["event_source"], "warehouse": resources["warehouse"]},
        definitions=definitions(pipeline),
    ) as context:
        result = source_change_sensor(context)
        return result, context.cursor


def definitions(pipeline) -> dg.Definitions:
    return dg.Definitions(assets=DAILY_ASSETS, jobs=[daily_sft_job], resources=pipeline.resources())


def run_requests(result) -> dict[str, dg.RunRequest]:
    if isinstance(result, dg.SkipReason):
        return {}
    return {request.partition_key: request for request in result}


def launch(pipeline, request: dg.RunRequest) -> dg.ExecuteInProcessResult:
    """What the daemon does with a request: the daily job on the partition, with the request's tags."""
    job = definitions(pipeline).resolve_job_def(DAILY_JOB)
    return job.execute_in_process(partition_key=request.partition_key, instance=pipeline.instance, tags=request.tags)


def test_closed_days_run_once_and_a_late_file_reruns_only_its_day(pipeline):
    write_lines(pipeline.landing / "events-2026-11-18.jsonl", [event(f"a{i}", "2026-11-18T10:00:00Z") for i in range(4)])
    write_lines(pipeline.landing / "events-2026-11-19.jsonl", [event(f"b{i}", "2026-11-19T10:00:00Z") for i in range(3)])
    today = datetime.now(UTC).date().isoformat()
    write_lines(pipeline.landing / "today.jsonl", [event("t", f"{today}T00:00:01Z")])

    first, cursor = tick(pipeline, None)
    requests = run_requests(first)
    assert set(requests) == {"2026-11-18", "2026-11-19"}  # today has not closed: it waits
    assert today in cursor
    again, _ = tick(pipeline, None)  # the same tick evaluated twice asks for the same runs
    assert {key: r.run_key for key, r in run_requests(again).items()} == {key: r.run_key for key, r in requests.items()}
    for request in requests.values():
        assert launch(pipeline, request).success

    unchanged, cursor = tick(pipeline, cursor)
    assert run_requests(unchanged) == {}

    write_lines(pipeline.landing / "late" / "more.jsonl", [event("late", "2026-11-18T23:00:00Z")])
    late, cursor = tick(pipeline, cursor)
    [(day, request)] = run_requests(late).items()
    assert day == "2026-11-18" and request.run_key != requests["2026-11-18"].run_key
    result = launch(pipeline, request)
    assert pipeline.metadata(result, "raw_events")["accepted"] == 5
    after, _ = tick(pipeline, cursor)
    assert run_requests(after) == {}


def test_a_late_object_in_an_s3_landing_prefix_reruns_only_its_day(s3_data_dir, tmp_path, instance):
    pipeline = Pipeline(tmp_path, instance, landing_dir=f"{s3_data_dir}/landing")
    write_lines(pipeline.landing / "events-2026-11-18.jsonl", [event(f"a{i}", "2026-11-18T10:00:00Z") for i in range(4)])
    write_lines(pipeline.landing / "events-2026-11-19.jsonl", [event(f"b{i}", "2026-11-19T10:00:00Z") for i in range(3)])
    upload(pipeline.landing, pipeline.landing_dir)
    first, cursor = tick(pipeline, None)
    requests = run_requests(first)
    assert set(requests) == {"2026-11-18", "2026-11-19"}
    for request in requests.values():
        assert launch(pipeline, request).success
    assert run_requests(tick(pipeline, cursor)[0]) == {}

    write_lines(pipeline.landing / "late" / "more.jsonl", [event("late", "2026-11-18T23:00:00Z")])
    upload(pipeline.landing / "late", f"{pipeline.landing_dir}/late")
    late, cursor = tick(pipeline, cursor)
    [(day, request)] = run_requests(late).items()
    assert day == "2026-11-18" and request.run_key != requests["2026-11-18"].run_key
    assert pipeline.metadata(launch(pipeline, request), "raw_events")["accepted"] == 5
    assert run_requests(tick(pipeline, cursor)[0]) == {}


def test_a_new_index_compares_every_day_again_and_runs_only_the_changed_ones(pipeline):
    """The landing index is rebuilt (its file deleted, or another one because the first partition
    day moved earlier when older files landed): its change counter starts again, so the cursor's
    watermark means nothing there."""
    for day in ("18", "19", "20"):
        write_lines(pipeline.landing / f"events-2026-11-{day}.jsonl", [event(f"{day}-{i}", f"2026-11-{day}T10:00:00Z") for i in range(3)])
    first, cursor = tick(pipeline, None)
    for request in run_requests(first).values():
        assert launch(pipeline, request).success

    for index in (pipeline.data / "state").glob("landing-index-*"):
        index.unlink()
    write_lines(pipeline.landing / "events-2026-11-17.jsonl", [event("older", "2026-11-17T10:00:00Z")])
    result, cursor = tick(pipeline, cursor)
    assert set(run_requests(result)) == {"2026-11-17"}  # the days that ran, unchanged, do not run again
    assert run_requests(tick(pipeline, cursor)[0]) == {}


def test_the_schedule_takes_the_day_that_closed_once(pipeline):
    write_lines(pipeline.landing / "events-2026-11-19.jsonl", [event(f"b{i}", "2026-11-19T10:00:00Z") for i in range(3)])
    resources = pipeline.resources()

    def evaluate(when: str):
        with dg.build_schedule_context(
            instance=pipeline.instance,
            scheduled_execution_time=datetime.fromisoformat(when),
            resources={"event_source": resources["event_source"], "warehouse": resources["warehouse"]},
            repository_def=definitions(pipeline).get_repository_def(),
        ) as context:
            return daily_sft_schedule.evaluate_tick(context)

    [request] = evaluate("2026-11-20T01:00:00+00:00").run_requests
    assert (request.partition_key, request.run_key) == ("2026-11-19", "2026-11-19")
    assert request.tags[FINGERPRINT_TAG]
    assert launch(pipeline, request).success
    skipped = evaluate("2026-11-20T01:00:00+00:00")
    assert skipped.run_requests == [] and "already ran on this content" in skipped.skip_message
    # a day without events still runs: its partitions are materialized empty
    [empty] = evaluate("2026-11-21T01:00:00+00:00").run_requests
    result = launch(pipeline, empty)
    assert pipeline.metadata(result, "raw_events")["events_read"] == 0
    assert pipeline.metadata(result, "sft_jsonl")["dagster/row_count"] == 0
