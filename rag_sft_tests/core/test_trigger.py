"""The training sensor's decision: threshold, exactly-once keys, consumption, failures, exclusions."""

from rag_sft.core import trigger
from rag_sft.core.trigger import TriggerState

SETTINGS = {"last_days": 0, "min_new_samples": 100, "max_attempts": 2}


def state_with(days: dict[str, tuple[str, int]], held_back: tuple[str, ...] = ()) -> TriggerState:
    state = TriggerState()
    storage_id = 0
    for day, (sha, records) in days.items():
        storage_id += 1
        state.ledger.saw_records(storage_id, day, exported=day not in held_back)
        if day not in held_back:
            storage_id += 1
            state.ledger.saw_jsonl(storage_id, day, sha, records, published=True)
    return state


def test_below_the_threshold_the_sensor_says_how_many_of_n():
    decision, _ = trigger.decide(state_with({"2026-11-18": ("a", 60)}), {}, **SETTINGS)
    assert decision == trigger.Skip("60 of 100 new samples")


def test_reaching_n_requests_a_run_keyed_by_the_dataset_and_reevaluation_asks_the_same():
    state = state_with({"2026-11-18": ("a", 60), "2026-11-19": ("b", 50)})
    first, after = trigger.decide(state, {}, **SETTINGS)
    assert isinstance(first, trigger.Request) and first.new_samples == 110
    assert first.days == {"2026-11-18": "a", "2026-11-19": "b"}
    again, _ = trigger.decide(state, {}, **SETTINGS)  # the same tick evaluated twice
    assert again == first
    while_pending, _ = trigger.decide(after, {first.dataset_hash: []}, **SETTINGS)  # not launched yet
    assert while_pending.run_key == first.run_key
    running, _ = trigger.decide(after, {first.dataset_hash: ["STARTED"]}, **SETTINGS)
    assert isinstance(running, trigger.Skip) and "still running" in running.reason


def test_a_successful_run_consumes_its_samples():
    state = state_with({"2026-11-18": ("a", 60), "2026-11-19": ("b", 50)})
    request, state = trigger.decide(state, {}, **SETTINGS)
    decision, state = trigger.decide(state, {request.dataset_hash: ["SUCCESS"]}, **SETTINGS)
    assert decision == trigger.Skip("0 of 100 new samples")
    assert state.consumed == {"2026-11-18": "a", "2026-11-19": "b"} and state.pending == {}


def test_a_failed_run_does_not_consume_and_the_next_tick_retries_until_max_attempts():
    state = state_with({"2026-11-19": ("b", 150)})
    first, state = trigger.decide(state, {}, **SETTINGS)
    retry, state = trigger.decide(state, {first.dataset_hash: ["FAILURE"]}, **SETTINGS)
    assert isinstance(retry, trigger.Request) and retry.run_key != first.run_key
    assert retry.run_key.endswith("-2") and retry.days == first.days and state.consumed == {}
    gave_up, state = trigger.decide(state, {first.dataset_hash: ["FAILURE", "FAILURE"]}, **SETTINGS)
    assert isinstance(gave_up, trigger.Skip) and "failed 2 times" in gave_up.reason
    # A retry of the failed run (re-execution) that succeeds consumes the samples after all.
    done, state = trigger.decide(state, {first.dataset_hash: ["FAILURE", "FAILURE", "SUCCESS"]}, **SETTINGS)
    assert done == trigger.Skip("0 of 100 new samples") and state.consumed == {"2026-11-19": "b"}


def test_a_rematerialized_day_with_the_same_content_is_not_new():
    state = state_with({"2026-11-19": ("b", 150)})
    request, state = trigger.decide(state, {}, **SETTINGS)
    _, state = trigger.decide(state, {request.dataset_hash: ["SUCCESS"]}, **SETTINGS)
    state.ledger.saw_records(100, "2026-11-19", exported=True)
    state.ledger.saw_jsonl(101, "2026-11-19", "b", 150, published=True)
    assert trigger.decide(state, {}, **SETTINGS)[0] == trigger.Skip("0 of 100 new samples")
    state.ledger.saw_records(102, "2026-11-19", exported=True)
    state.ledger.saw_jsonl(103, "2026-11-19", "c", 150, published=True)  # the day's content changed
    assert isinstance(trigger.decide(state, {}, **SETTINGS)[0], trigger.Request)


def test_days_held_back_by_their_checks_are_not_counted():
    state = state_with({"2026-11-18": ("a", 60), "2026-11-19": ("b", 500)}, held_back=("2026-11-19",))
    assert trigger.decide(state, {}, **SETTINGS)[0] == trigger.Skip("60 of 100 new samples")
    # A day exported earlier and held back on re-materialization drops out too.
    state.ledger.saw_jsonl(50, "2026-11-17", "z", 500, published=True)
    state.ledger.saw_records(51, "2026-11-17", exported=False)
    assert "2026-11-17" not in state.ledger.exportable()


def test_the_window_of_the_last_k_days():
    state = state_with({"2026-11-17": ("a", 90), "2026-11-18": ("b", 90), "2026-11-19": ("c", 90)})
    decision, _ = trigger.decide(state, {}, **{**SETTINGS, "last_days": 1})
    assert decision == trigger.Skip("90 of 100 new samples")
    decision, _ = trigger.decide(state, {}, **{**SETTINGS, "last_days": 2})
    assert decision.days == {"2026-11-18": "b", "2026-11-19": "c"}


def test_the_cursor_round_trips():
    state = state_with({"2026-11-19": ("b", 150)})
    _, state = trigger.decide(state, {}, **SETTINGS)
    assert TriggerState.from_cursor(state.to_cursor()) == state
