"""A day's sft_records added up as they are written, and the export checks' verdicts on them:
what the `sft_records` asset reports, judges and remembers for the days after it."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

from rag_sft.core import checks, rules, samples, triage
from rag_sft.core.invariants import require


def value_counts(array: pa.Array) -> dict[str, int]:
    return {item["values"].as_py(): item["counts"].as_py() for item in pc.value_counts(array)}


UNTRIAGED = "untriaged"  # a record whose sample was never triaged (annotated before triage existed)


@dataclass
class RecordsTally:
    """The records of a day, batch by batch: the labels, sample_ids (when the near-duplicate
    index keeps them) and request_ids of those exported, their confidences, and why the others
    were filtered."""

    keep_sample_ids: bool
    exported_labels: Counter = field(default_factory=Counter)
    exported_ids: set[str] = field(default_factory=set)  # for the near-duplicate index
    # for the later days' ingest (a request exported once is a duplicate after)
    exported_requests: list[str] = field(default_factory=list)
    filter_reasons: Counter = field(default_factory=Counter)
    confidences: list[pa.Array] = field(default_factory=list)
    routes: Counter = field(default_factory=Counter)  # docs/spec.md, "Rule 15: Triage"

    def add(self, batch: pa.RecordBatch) -> None:
        exported = batch.filter(pc.equal(batch.column("status"), samples.EXPORTED))
        self.routes.update(value_counts(pc.fill_null(batch.column("route"), UNTRIAGED)))
        require(
            not pc.any(pc.is_in(exported.column("route"), value_set=pa.array(list(triage.FILTER_REASONS)))).as_py(),
            "a sample triaged to retrieval or review was exported",
        )
        self.exported_labels.update(value_counts(exported.column("label")))
        if self.keep_sample_ids:
            self.exported_ids.update(exported.column("sample_id").to_pylist())
        self.exported_requests.extend(exported.column("request_id").to_pylist())
        self.confidences.append(exported.column("confidence"))
        self.filter_reasons.update(value_counts(pc.drop_null(batch.column("filter_reason"))))

    @property
    def would_export(self) -> int:
        return sum(self.exported_labels.values())

    @property
    def filtered(self) -> int:
        return sum(self.filter_reasons.values())

    @property
    def completion_failed(self) -> int:
        return sum(n for reason, n in self.filter_reasons.items() if reason.startswith(rules.COMPLETION_FAILED_PREFIX))

    def require_accounts_for(self, rows: int, day: str) -> None:
        """Every record written is exported or filtered, once."""
        require(self.would_export + self.filtered == rows, f"{day}: exported {self.would_export} + filtered "
                f"{self.filtered} != {rows} records: a sample was lost or counted twice")
        require(sum(self.routes.values()) == rows, f"{day}: routes {dict(self.routes)} do not add up to {rows} records")

    def verdicts(
        self,
        rows: int,
        trailing_labels: Mapping[str, int],
        trailing_days: int,
        label_weights: Mapping[str, float],
        gate: checks.CheckSettings,
    ) -> list[checks.Verdict]:
        """The checks on the records that would be exported (before a hold-back relabels them):
        their confidence, and their label mix against the trailing days'."""
        return [
            checks.confidence_verdict(
                pa.chunked_array(self.confidences, pa.float64()).to_pylist(), rows, self.filter_reasons[rules.LOW_CONFIDENCE], gate
            ),
            checks.label_mix_verdict(self.exported_labels, trailing_labels, trailing_days, label_weights, gate),
        ]
