"""When to train: the training sensor's decision as a pure function of its state and the facts.

State (the sensor's cursor): the day -> content hash pairs already trained on (`consumed`),
and the datasets requested but not yet trained (`pending`). New samples are the records of the
exportable days in the training window whose content is not consumed yet. A request is keyed
by the dataset's hash and the attempt number, so re-evaluating a tick asks for the same run
(which Dagster launches once); a successful run consumes its days, a failed one does not, and
the next tick asks for a new attempt (up to `max_attempts`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from rag_sft.core.training_data import dataset_hash

SUCCESS = "SUCCESS"
FAILURE = "FAILURE"
CANCELED = "CANCELED"
FINISHED = {SUCCESS, FAILURE, CANCELED}


@dataclass(frozen=True)
class ExportedDay:
    sha256: str
    records: int


@dataclass
class ExportLedger:
    """What the event log says about each day's export, folded in storage-id order.

    A day is exportable when its latest `sft_jsonl` materialization published the file and
    came after the latest `sft_records` materialization, which did not hold the day back.
    """

    after: dict[str, int] = field(default_factory=dict)  # asset -> the last storage id folded in
    jsonl: dict[str, list] = field(default_factory=dict)  # day -> [storage_id, sha256, records, published]
    records: dict[str, list] = field(default_factory=dict)  # day -> [storage_id, exported (not held back)]

    def saw_jsonl(self, storage_id: int, day: str, sha256: str, records: int, published: bool) -> None:
        self.jsonl[day] = [storage_id, sha256, records, published]
        self.after["sft_jsonl"] = max(self.after.get("sft_jsonl", 0), storage_id)

    def saw_records(self, storage_id: int, day: str, exported: bool) -> None:
        self.records[day] = [storage_id, exported]
        self.after["sft_records"] = max(self.after.get("sft_records", 0), storage_id)

    def exportable(self) -> dict[str, ExportedDay]:
        days = {}
        for day, (jsonl_id, sha256, records, published) in self.jsonl.items():
            records_id, exported = self.records.get(day, [0, True])
            if published and exported and jsonl_id > records_id:
                days[day] = ExportedDay(sha256, records)
        return dict(sorted(days.items()))


@dataclass
class TriggerState:
    ledger: ExportLedger = field(default_factory=ExportLedger)
    consumed: dict[str, str] = field(default_factory=dict)  # day -> sha256 trained on
    pending: dict[str, dict[str, str]] = field(default_factory=dict)  # dataset hash -> its day -> sha256

    def to_cursor(self) -> str:
        ledger = {"after": self.ledger.after, "jsonl": self.ledger.jsonl, "records": self.ledger.records}
        return json.dumps({"ledger": ledger, "consumed": self.consumed, "pending": self.pending}, sort_keys=True)

    @classmethod
    def from_cursor(cls, cursor: str | None) -> TriggerState:
        if not cursor:
            return cls()
        data = json.loads(cursor)
        ledger = data.get("ledger", {})
        return cls(
            ExportLedger(dict(ledger.get("after", {})), dict(ledger.get("jsonl", {})), dict(ledger.get("records", {}))),
            dict(data.get("consumed", {})),
            {k: dict(v) for k, v in data.get("pending", {}).items()},
        )

    def copy(self) -> TriggerState:
        return TriggerState.from_cursor(self.to_cursor())


@dataclass(frozen=True)
class Request:
    run_key: str
    dataset_hash: str
    days: dict[str, str]  # day -> sha256 the run must find
    new_samples: int


@dataclass(frozen=True)
class Skip:
    reason: str


def training_window(exportable: Mapping[str, ExportedDay], last_days: int) -> dict[str, ExportedDay]:
    """The exportable days a training run takes: all of them, or the latest `last_days`."""
    days = sorted(exportable)
    chosen = days[-last_days:] if last_days > 0 else days
    return {day: exportable[day] for day in chosen}


def decide(
    state: TriggerState,
    run_statuses: Mapping[str, Sequence[str]],
    *,
    last_days: int,
    min_new_samples: int,
    max_attempts: int,
) -> tuple[Request | Skip, TriggerState]:
    """The request (or why not) and the state to store as the new cursor.

    `state.ledger` must be up to date; `run_statuses`: for each pending dataset hash, the
    statuses of the runs launched for it.
    """
    state = state.copy()
    exportable = state.ledger.exportable()
    failures: dict[str, int] = {}
    for pending_hash, days in list(state.pending.items()):
        statuses = list(run_statuses.get(pending_hash, []))
        if SUCCESS in statuses:
            state.consumed.update(days)
            del state.pending[pending_hash]
        elif any(status not in FINISHED for status in statuses):
            return Skip(f"training on dataset {pending_hash[:12]} is still running"), state
        else:
            failures[pending_hash] = len(statuses)

    window = training_window(exportable, last_days)
    new_samples = sum(day.records for name, day in window.items() if state.consumed.get(name) != day.sha256)
    if new_samples < min_new_samples:
        return Skip(f"{new_samples} of {min_new_samples} new samples"), state

    days = {name: day.sha256 for name, day in window.items()}
    wanted = dataset_hash(days)
    attempt = failures.get(wanted, 0) + 1
    if attempt > max_attempts:
        return Skip(
            f"training on dataset {wanted[:12]} ({new_samples} new samples) failed {attempt - 1} times; "
            "fix the cause and re-execute the last run, or change the data"
        ), state
    # Requests for other datasets that never succeeded are superseded by this one.
    state.pending = {wanted: days}
    return Request(f"lora-{wanted[:16]}-{attempt}", wanted, days, new_samples), state
