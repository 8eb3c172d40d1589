"""When to train: the training sensor's decision as a pure function of the facts it gathers.

The facts: the exportable days (the export ledger, folded from the event log), how many of their
exported records carry a sample_id not trained on yet, inside the training window and outside it,
and the runs of the dataset requested last (`pending`). A request is keyed by the dataset's hash
and the attempt number, so re-evaluating a tick asks for the same run (which Dagster launches
once). A successful run means its samples are trained on; a failed one does not, and the next
tick asks for a new attempt (up to `max_attempts`); a canceled one is not asked for again until
someone re-executes it or the data changes.

The cursor holds only watermarks and the pending dataset's hash: what grows with history (the
ledger, the sample_ids) lives in the sensor's own store (`io.training_ledger`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from rag_sft.core.training_data import dataset_hash

SUCCESS = "SUCCESS"
FAILURE = "FAILURE"
CANCELED = "CANCELED"
FINISHED = {SUCCESS, FAILURE, CANCELED}


# The ledger's watermark of `sft_jsonl` withdrawals (observations), beside those of the assets.
WITHDRAWN = "sft_jsonl/withdrawn"


@dataclass(frozen=True)
class ExportedDay:
    sha256: str
    records: int


@dataclass
class ExportLedger:
    """What the event log says about each day's export, folded in storage-id order.

    A day is exportable when its latest `sft_jsonl` materialization published the file and
    came after the latest `sft_records` materialization, which did not hold the day back, and
    after the latest withdrawal (an `sft_jsonl` step that held the day back and failed).
    """

    after: dict[str, int] = field(default_factory=dict)  # asset -> the last storage id folded in
    jsonl: dict[str, list] = field(default_factory=dict)  # day -> [storage_id, sha256, records, published]
    records: dict[str, list] = field(default_factory=dict)  # day -> [storage_id, exported (not held back)]

    # An older materialization never replaces a newer one, so folding the same records again
    # (from an earlier watermark) leaves the ledger as it was.
    def saw_jsonl(self, storage_id: int, day: str, sha256: str, records: int, published: bool) -> None:
        if storage_id >= self.jsonl.get(day, [0])[0]:
            self.jsonl[day] = [storage_id, sha256, records, published]
        self.after["sft_jsonl"] = max(self.after.get("sft_jsonl", 0), storage_id)

    def saw_withdrawal(self, storage_id: int, day: str) -> None:
        """The day's exports were withdrawn at `storage_id`: nothing of it is published since."""
        if storage_id >= self.jsonl.get(day, [0])[0]:
            self.jsonl[day] = [storage_id, "", 0, False]
        self.after[WITHDRAWN] = max(self.after.get(WITHDRAWN, 0), storage_id)

    def saw_records(self, storage_id: int, day: str, exported: bool) -> None:
        if storage_id >= self.records.get(day, [0])[0]:
            self.records[day] = [storage_id, exported]
        self.after["sft_records"] = max(self.after.get("sft_records", 0), storage_id)

    def exportable(self) -> dict[str, ExportedDay]:
        days = {}
        for day, (jsonl_id, sha256, records, published) in self.jsonl.items():
            records_id, exported = self.records.get(day, [0, True])
            if published and exported and jsonl_id > records_id:
                days[day] = ExportedDay(sha256, records)
        return dict(sorted(days.items()))


@dataclass(frozen=True)
class Cursor:
    """The sensor's cursor: a few numbers and one hash, whatever the history."""

    after: dict[str, int] = field(default_factory=dict)  # asset -> the last storage id folded into the ledger
    pending: str = ""  # the dataset hash requested last and not trained on yet

    def to_json(self) -> str:
        return json.dumps({"after": self.after, "pending": self.pending}, sort_keys=True)

    @classmethod
    def from_json(cls, cursor: str | None) -> Cursor:
        data = json.loads(cursor) if cursor else {}
        return cls(dict(data.get("after", {})), data.get("pending", ""))


@dataclass(frozen=True)
class NewSamples:
    """Exported records whose sample_id was never trained on."""

    in_window: int
    outside_window: int


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


def count_new(untrained_by_day: Mapping[str, int], window: Iterable[str], exportable: Iterable[str]) -> NewSamples:
    """New samples of the exportable days, split by the window (`untrained_by_day` may name days
    that are no longer exportable: they count for nothing)."""
    inside = set(window)
    outside = set(exportable) - inside
    return NewSamples(
        sum(untrained_by_day.get(day, 0) for day in inside), sum(untrained_by_day.get(day, 0) for day in outside)
    )


def was_trained(statuses: Sequence[str]) -> bool:
    """Whether the runs of a dataset trained on it (a successful re-execution counts too)."""
    return SUCCESS in statuses


def new_samples_summary(new: NewSamples, min_new_samples: int, last_days: int, exportable_days: int) -> str:
    """"k of N new samples" and where: the window, and what waits outside it."""
    counted = f"{new.in_window} of {min_new_samples} new samples"
    if last_days > 0:
        window = "the last exportable day" if last_days == 1 else f"the last {last_days} exportable days"
        return f"{counted} in {window} ({new.outside_window} more outside the window)"
    everything = "the 1 exportable day" if exportable_days == 1 else f"all {exportable_days} exportable days"
    return f"{counted} in {everything}"


def decide(
    window: Mapping[str, ExportedDay],
    new: NewSamples,
    *,
    exportable_days: int,
    pending: str,
    pending_statuses: Sequence[str],
    last_days: int,
    min_new_samples: int,
    max_attempts: int,
) -> Request | Skip:
    """The request, or why not. `pending`: the dataset requested last and not trained on yet
    ("" when none); `pending_statuses`: the statuses of its runs, oldest first."""
    if pending and any(status not in FINISHED for status in pending_statuses):
        return Skip(f"training on dataset {pending[:12]} is still running")
    summary = new_samples_summary(new, min_new_samples, last_days, exportable_days)
    if new.in_window < min_new_samples:
        return Skip(summary)

    days = {name: day.sha256 for name, day in window.items()}
    wanted = dataset_hash(days)
    runs = list(pending_statuses) if wanted == pending else []  # a new dataset starts again at attempt 1
    if runs and runs[-1] == CANCELED:
        return Skip(
            f"training on dataset {wanted[:12]} ({summary}) was canceled: not retried until asked. Re-execute the "
            "canceled run to train on this data, or wait for the data to change (a new or re-exported day is a new "
            "dataset)"
        )
    attempt = len(runs) + 1
    if attempt > max_attempts:
        return Skip(
            f"training on dataset {wanted[:12]} ({summary}) failed {attempt - 1} times; "
            "fix the cause and re-execute the last run, or change the data"
        )
    return Request(f"lora-{wanted[:16]}-{attempt}", wanted, days, new.in_window)
