"""The training sensor's decision: threshold, exactly-once keys, failures, cancellations,
the window in the skip reason, exclusions, and a cursor that does not grow."""

from rag_sft.core import trigger
from rag_sft.core.trigger import Cursor, ExportedDay, ExportLedger, NewSamples

SETTINGS = {"last_days": 0, "min_new_samples": 100, "max_attempts": 2}


def ledger_with(days: dict[str, tuple[str, int]], held_back: tuple[str, ...] = ()) -> ExportLedger:
    ledger = ExportLedger()
    storage_id = 0
    for day, (sha, records) in days.items():
        storage_id += 1
        ledger.saw_records(storage_id, day, exported=day not in held_back)
        if day not in held_back:
            storage_id += 1
            ledger.saw_jsonl(storage_id, day, sha, records, published=True)
    return ledger


def decide(days: dict[str, tuple[str, int]], new: dict[str, int], pending="", statuses=(), **settings):
    """The decision over exportable `days` (day -> sha, records) with `new` samples per day."""
    settings = {**SETTINGS, **settings}
    exportable = ledger_with(days).exportable()
    window = trigger.training_window(exportable, settings["last_days"])
    return trigger.decide(
        window,
        trigger.count_new(new, window, exportable),
        exportable_days=len(exportable),
        pending=pending,
        pending_statuses=list(statuses),
        **settings,
    )


def test_below_the_threshold_the_sensor_says_how_many_of_n_in_which_days():
    days = {"2026-11-17": ("a", 90), "2026-11-18": ("b", 60), "2026-11-19": ("c", 30)}
    new = {"2026-11-17": 90, "2026-11-18": 5, "2026-11-19": 30}
    assert decide(days, new, min_new_samples=200) == trigger.Skip("125 of 200 new samples in all 3 exportable days")
    assert decide(days, new, min_new_samples=200, last_days=2) == trigger.Skip(
        "35 of 200 new samples in the last 2 exportable days (90 more outside the window)"
    )
    assert decide(days, new, min_new_samples=200, last_days=1).reason.startswith(
        "30 of 200 new samples in the last exportable day (95 more"
    )


def test_reaching_n_requests_a_run_keyed_by_the_dataset_and_reevaluation_asks_the_same():
    days = {"2026-11-18": ("a", 60), "2026-11-19": ("b", 50)}
    first = decide(days, {"2026-11-18": 60, "2026-11-19": 50})
    assert isinstance(first, trigger.Request) and first.new_samples == 110
    assert first.days == {"2026-11-18": "a", "2026-11-19": "b"}
    assert decide(days, {"2026-11-18": 60, "2026-11-19": 50}) == first  # the same tick evaluated twice
    not_launched_yet = decide(days, {"2026-11-18": 60, "2026-11-19": 50}, first.dataset_hash, [])
    assert not_launched_yet.run_key == first.run_key
    running = decide(days, {"2026-11-18": 60, "2026-11-19": 50}, first.dataset_hash, ["STARTED"])
    assert running == trigger.Skip(f"training on dataset {first.dataset_hash[:12]} is still running")


def test_new_samples_are_counted_by_sample_id_not_by_day():
    # A late event on a 1,500-record day already trained on: its content hash changes, 1 sample is new.
    days = {"2026-11-19": ("changed", 1501)}
    assert decide(days, {"2026-11-19": 1}) == trigger.Skip("1 of 100 new samples in the 1 exportable day")
    # Untrained samples of days that are no longer exportable count for nothing.
    assert decide(days, {"2026-11-19": 1, "2026-11-10": 500}).reason.startswith("1 of 100")


def test_a_failed_run_is_retried_until_max_attempts_and_a_successful_one_trains():
    days, new = {"2026-11-19": ("b", 150)}, {"2026-11-19": 150}
    first = decide(days, new)
    retry = decide(days, new, first.dataset_hash, ["FAILURE"])
    assert isinstance(retry, trigger.Request) and retry.run_key == first.run_key[:-1] + "2" and retry.days == first.days
    gave_up = decide(days, new, first.dataset_hash, ["FAILURE", "FAILURE"])
    assert isinstance(gave_up, trigger.Skip) and "failed 2 times" in gave_up.reason
    assert "150 of 100 new samples in the 1 exportable day" in gave_up.reason
    # A re-execution of the failed run that succeeds trains on the samples after all.
    assert trigger.was_trained(["FAILURE", "FAILURE", "SUCCESS"]) and not trigger.was_trained(["FAILURE", "CANCELED"])
    # Other data is a new dataset: attempt 1 again.
    other = decide({"2026-11-19": ("c", 150)}, new, first.dataset_hash, ["FAILURE", "FAILURE"])
    assert isinstance(other, trigger.Request) and other.run_key.endswith("-1")


def test_a_canceled_run_is_not_retried_until_it_is_reexecuted_or_the_data_changes():
    days, new = {"2026-11-19": ("b", 150)}, {"2026-11-19": 150}
    first = decide(days, new)
    canceled = decide(days, new, first.dataset_hash, ["CANCELED"])
    assert isinstance(canceled, trigger.Skip) and "was canceled: not retried until asked" in canceled.reason
    assert "Re-execute the canceled run" in canceled.reason
    assert decide(days, new, first.dataset_hash, ["CANCELED", "STARTED"]).reason.endswith("is still running")
    # The re-execution failed: ordinary retries resume (2 runs already count as attempts).
    assert isinstance(decide(days, new, first.dataset_hash, ["CANCELED", "FAILURE"], max_attempts=3), trigger.Request)
    changed = decide({"2026-11-19": ("c", 151)}, {"2026-11-19": 151}, first.dataset_hash, ["CANCELED"])
    assert isinstance(changed, trigger.Request) and changed.run_key.endswith("-1")


def test_days_held_back_by_their_checks_are_not_exportable():
    ledger = ledger_with({"2026-11-18": ("a", 60), "2026-11-19": ("b", 500)}, held_back=("2026-11-19",))
    assert list(ledger.exportable()) == ["2026-11-18"]
    # A day exported earlier and held back on re-materialization drops out too.
    ledger.saw_jsonl(50, "2026-11-17", "z", 500, published=True)
    ledger.saw_records(51, "2026-11-17", exported=False)
    assert "2026-11-17" not in ledger.exportable()


def test_folding_the_same_materializations_again_changes_nothing():
    ledger = ledger_with({"2026-11-18": ("a", 60), "2026-11-19": ("b", 50)})
    ledger.saw_jsonl(10, "2026-11-19", "c", 51, published=True)
    before = (dict(ledger.jsonl), dict(ledger.records), dict(ledger.after))
    ledger.saw_records(3, "2026-11-19", exported=True)  # from an earlier watermark
    ledger.saw_jsonl(4, "2026-11-19", "b", 50, published=True)
    assert (ledger.jsonl, ledger.records, ledger.after) == before
    assert ledger.exportable()["2026-11-19"] == ExportedDay("c", 51)


def test_the_window_of_the_last_k_days():
    days = {"2026-11-17": ("a", 90), "2026-11-18": ("b", 90), "2026-11-19": ("c", 90)}
    new = {day: 90 for day in days}
    assert decide(days, new, last_days=2).days == {"2026-11-18": "b", "2026-11-19": "c"}
    assert trigger.count_new(new, ["2026-11-19"], days) == NewSamples(90, 180)


def test_the_cursor_is_watermarks_and_one_hash_whatever_the_history():
    ledger = ExportLedger()
    for n in range(400):
        ledger.saw_records(2 * n + 1, f"day-{n:04d}", exported=True)
        ledger.saw_jsonl(2 * n + 2, f"day-{n:04d}", f"{n:064x}", 1500, published=True)
    cursor = Cursor(ledger.after, "f" * 64)
    assert Cursor.from_json(cursor.to_json()) == cursor and len(cursor.to_json()) < 200
    assert Cursor.from_json(None) == Cursor()
