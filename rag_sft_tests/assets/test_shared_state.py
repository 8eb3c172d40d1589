"""Days materialized on two hosts that share the state database (PostgreSQL) and the
warehouse, each with a local state folder of its own: the second host decides duplicates,
near-duplicates and erased requests as one host would, from what the first one recorded."""

import uuid

from rag_sft.cli.state import import_local_state
from rag_sft.erasure_job import ERASE_OP, erase_requests_job
from rag_sft.io.state.erasure_ledger import ErasureLedger
from rag_sft.io.state.near_duplicate_index import NearDuplicateIndex
from rag_sft.io.state.request_index import RequestIndex
from rag_sft_tests.assets.test_near_duplicates import DAY1, DAY2, LATER_TOPICS, distinct_events
from rag_sft_tests.helpers import write_lines


def test_a_second_host_sees_the_first_hosts_requests_samples_and_erasures(pipeline, postgres):
    pipeline.state_url = postgres.url(postgres.create_database(f"state_{uuid.uuid4().hex[:8]}"))
    first = distinct_events(DAY1, "a")
    write_lines(pipeline.landing / "day1.jsonl", first)
    second = distinct_events(DAY2, "b", LATER_TOPICS)
    asked_again = {**first[2], "request_id": "b-again", "timestamp": f"{DAY2}T08:00:00Z", "question": "会员积分的具体规则是什么"}
    re_emitted = {**first[1], "timestamp": f"{DAY2}T09:00:00Z"}  # request a1 shipped again the next day
    late_erased = {**first[3], "timestamp": f"{DAY2}T10:00:00Z"}  # a late copy of a request erased meanwhile
    write_lines(pipeline.landing / "day2.jsonl", [*second, asked_again, re_emitted, late_erased])

    pipeline.state_dir = str(pipeline.root / "host-a")
    pipeline.materialize(DAY1)
    erased = erase_requests_job.execute_in_process(
        run_config={"ops": {ERASE_OP: {"config": {"request_ids": ["a3"]}}}},
        resources=pipeline.resources(),
        instance=pipeline.instance,
    )
    assert erased.success
    assert erased.output_for_node(ERASE_OP)["index_rows_removed"] == 2  # a3's request row and kept sample

    pipeline.state_dir = str(pipeline.root / "host-b")  # nothing of host A's local state here
    day2 = pipeline.materialize(DAY2)
    raw = pipeline.metadata(day2, "raw_events")
    assert (raw["duplicates"], raw["erased"]) == (1, 1)  # a1 first seen on DAY1; a3 erased on host A
    assert pipeline.metadata(day2, "sft_records")["near_duplicates"]["across_days"] == 1  # b-again is a2 retyped
    # The shared truth went to the database, none to either host's state folder.
    assert not any((pipeline.root / host / store).exists() for host in ("host-a", "host-b")
                   for store in (RequestIndex.FILE, NearDuplicateIndex.FILE, ErasureLedger.FILE))


def test_moving_to_the_state_database_asks_for_this_machines_state_and_then_carries_it(pipeline, postgres):
    first = distinct_events(DAY1, "a")
    write_lines(pipeline.landing / "day1.jsonl", first)
    re_emitted = {**first[1], "timestamp": f"{DAY2}T09:00:00Z"}
    late_erased = {**first[3], "timestamp": f"{DAY2}T10:00:00Z"}
    write_lines(pipeline.landing / "day2.jsonl", [*distinct_events(DAY2, "b", LATER_TOPICS), re_emitted, late_erased])
    pipeline.materialize(DAY1)  # the SQLite default: this machine's state folder
    erase = {"ops": {ERASE_OP: {"config": {"request_ids": ["a3"]}}}}
    assert erase_requests_job.execute_in_process(run_config=erase, resources=pipeline.resources(), instance=pipeline.instance).success

    pipeline.state_url = postgres.url(postgres.create_database(f"state_{uuid.uuid4().hex[:8]}"))
    refused = pipeline.materialize(DAY2, raise_on_error=False)
    assert not refused.success
    [failure] = [event for event in refused.all_events if event.is_step_failure]
    message = failure.step_failure_data.error.to_string()
    assert "StateUnavailable" in message and "run `rag-sft state-import` on this machine first" in message
    assert postgres.password not in message

    imported = import_local_state(pipeline.resources()["warehouse"])
    assert imported[ErasureLedger.FILE] == {"erased": 1}
    assert imported[RequestIndex.FILE] == {"request_days": 9}  # a0..a9 exported on DAY1, a3 erased
    state = pipeline.data / "state"
    assert not (state / RequestIndex.FILE).exists() and (state / f"{RequestIndex.FILE}.imported").exists()
    day2 = pipeline.materialize(DAY2)
    raw = pipeline.metadata(day2, "raw_events")
    assert (raw["duplicates"], raw["erased"]) == (1, 1)  # as on the machine that had it all
