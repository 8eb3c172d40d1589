"""Erasure's gaps (issue 25): a dead-letter line whose request_id has spaces around it, and the
training sensor's ledger of sample_ids."""

import sqlite3

import orjson
import pandas as pd

from rag_sft.erasure_job import ERASE_OP, erase_requests_job
from rag_sft.io.state.export_ledger import update_ledger
from rag_sft.io.state.training_ledger import TrainingLedger
from rag_sft_tests.assets.test_near_duplicates import DAY1, distinct_events
from rag_sft_tests.helpers import write_lines


def erase(pipeline, *request_ids: str) -> dict:
    result = erase_requests_job.execute_in_process(
        run_config={"ops": {ERASE_OP: {"config": {"request_ids": list(request_ids)}}}},
        resources=pipeline.resources(),
        instance=pipeline.instance,
    )
    assert result.success
    return result.output_for_node(ERASE_OP)


def dead_letter_texts(pipeline) -> list[str]:
    return pd.read_parquet(pipeline.data / "warehouse" / "rejected_events")["raw_text"].tolist()


def test_a_dead_letter_line_whose_request_id_has_spaces_around_it_is_erased_and_stays_erased(pipeline):
    events = distinct_events(DAY1, "a")
    blank_question = {**events[0], "request_id": "  spaced-rejected \t", "question": "  "}  # rejected: blank question
    damaged = orjson.dumps({**events[1], "request_id": " spaced-damaged "})[:-40]  # unreadable: only its raw text names it
    write_lines(pipeline.landing / "day1.jsonl", [*events[2:], blank_question, damaged])
    pipeline.materialize(DAY1)
    before = dead_letter_texts(pipeline)
    assert sum("spaced-rejected" in text for text in before) == sum("spaced-damaged" in text for text in before) == 1

    report = erase(pipeline, "spaced-rejected", "spaced-damaged")
    assert report["days"] == {DAY1: {"rejected_events": 2}}
    assert not [text for text in dead_letter_texts(pipeline) if "spaced-" in text]

    day1 = pipeline.materialize(DAY1)  # the landing file still holds both lines
    assert not [text for text in dead_letter_texts(pipeline) if "spaced-" in text]
    raw = pipeline.metadata(day1, "raw_events")
    assert (raw["rejected"], raw["erased"]) == (0, 2)


def test_erasure_removes_the_erased_requests_sample_ids_from_the_training_ledger(pipeline):
    write_lines(pipeline.landing / "day1.jsonl", distinct_events(DAY1, "a"))
    pipeline.materialize(DAY1)
    warehouse = pipeline.resources()["warehouse"]
    # What the training sensor keeps: each exportable day's sample_ids, and those trained on.
    with warehouse.open_state(TrainingLedger) as store, store.transaction():
        ledger = update_ledger(pipeline.instance, store.export_ledger({}))
        store.save(ledger)
        assert store.refresh_samples(ledger.exportable(), warehouse.jsonl_path) == []
        store.mark_trained(["a1_factuality_error", "a2_factuality_error"])
    database = pipeline.data / "state" / TrainingLedger.FILE

    def ledger_ids() -> set[str]:
        with sqlite3.connect(database) as db:
            return {row[0] for table in ("samples", "trained") for row in db.execute(f"SELECT sample_id FROM {table}")}

    assert {"a1_factuality_error", "a3_factuality_error"} <= ledger_ids()

    report = erase(pipeline, "a1", "a3")
    left = ledger_ids()
    assert not [sample_id for sample_id in left if sample_id.startswith(("a1_", "a3_"))]
    assert "a2_factuality_error" in left
    with sqlite3.connect(database) as db:
        assert db.execute("SELECT untrained FROM sampled WHERE day = ?", (DAY1,)).fetchone() == (7,)  # 10 - 2 erased - a2
    assert report["training_ledger_rows_removed"] == 3  # a1 and a3 exported, a1 trained on
