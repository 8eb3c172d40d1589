"""The rules that decide whether a day's records may be exported (docs/checks.md, "Asset checks").

Each rule returns a `Verdict`: passed or not, the severity it fails with, a description that
names the rule, the numbers and the threshold, and plain metadata for the UI. A verdict that
fails at ERROR holds the day back; at WARN the day goes through with a warning. The label mix
is a monitor (WARN only): balance belongs to the training set (`core.balance`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

import msgspec

from rag_sft.core import samples

ERROR = "ERROR"
WARN = "WARN"
Severity = Literal["ERROR", "WARN"]

CONFIDENCE = "confidence"
LABEL_BALANCE = "label_balance"
EXPORT_FORMAT = "export_format"


@dataclass(frozen=True)
class CheckSettings:
    min_confidence: float = 0.6  # the filter's threshold (SftRules.min_confidence)
    max_filtered_share: float = 0.5
    max_label_mix_change: float = 0.2  # a label's share against the trailing days', in share points
    label_mix_days: int = 7  # trailing days the day's label mix is compared with
    min_records_for_label_mix: int = 50  # fewer records (the day's, or the trailing days'): not compared
    confidence_severity: Severity = ERROR
    export_format_severity: Severity = ERROR


@dataclass(frozen=True)
class Verdict:
    check: str
    passed: bool
    severity: Severity  # what a failure means: ERROR holds the day back, WARN lets it through
    description: str
    metadata: dict = field(default_factory=dict)

    @property
    def holds_back(self) -> bool:
        return not self.passed and self.severity == ERROR

    @property
    def outcome(self) -> str:
        return outcome(self.passed, self.severity, self.description)


def outcome(passed: bool, severity: Severity, description: str) -> str:
    """"passed", "warned: <why>" or "failed: <why>" (what a dataset version records)."""
    if passed:
        return "passed"
    return f"{'failed' if severity == ERROR else 'warned'}: {description}"


def confidence_verdict(
    exported_confidences: Iterable[float], accepted: int, filtered_low_confidence: int, settings: CheckSettings
) -> Verdict:
    """Every exported record at or above min_confidence (fails at the configured severity);
    more than max_filtered_share of accepted events filtered for low confidence warns."""
    values = list(exported_confidences)
    below = sum(1 for value in values if not value >= settings.min_confidence)  # NaN counts as below
    filtered_share = filtered_low_confidence / accepted if accepted else 0.0
    metadata = {
        "exported": len(values),
        "below_min_confidence": below,
        "min_confidence": settings.min_confidence,
        "lowest_exported_confidence": min(values) if values else None,
        "mean_exported_confidence": sum(values) / len(values) if values else None,
        "accepted": accepted,
        "filtered_low_confidence": filtered_low_confidence,
        "filtered_share": round(filtered_share, 4),
        "max_filtered_share": settings.max_filtered_share,
    }
    if below:
        return Verdict(
            CONFIDENCE,
            False,
            settings.confidence_severity,
            f"confidence: {below} of {len(values)} exported records are below min_confidence "
            f"{settings.min_confidence} (lowest {min(values):.4f})",
            metadata,
        )
    if filtered_share > settings.max_filtered_share:
        return Verdict(
            CONFIDENCE,
            False,
            WARN,
            f"confidence: {filtered_low_confidence} of {accepted} accepted events ({filtered_share:.1%}) were filtered "
            f"for low confidence, above max_filtered_share {settings.max_filtered_share:.0%}",
            metadata,
        )
    mean = metadata["mean_exported_confidence"]
    summary = f"mean {mean:.4f}" if mean is not None else "no records exported"
    return Verdict(
        CONFIDENCE,
        True,
        settings.confidence_severity,
        f"confidence: all {len(values)} exported records at or above {settings.min_confidence} ({summary}); "
        f"{filtered_share:.1%} filtered for low confidence",
        metadata,
    )


def _shares(counts: Mapping[str, int]) -> dict[str, float]:
    total = sum(counts.values())
    return {label: count / total for label, count in counts.items()} if total else {}


def label_mix_verdict(
    label_counts: Mapping[str, int],
    trailing_counts: Mapping[str, int],
    trailing_days: int,
    label_weights: Mapping[str, float],
    settings: CheckSettings,
) -> Verdict:
    """A monitor, never a gate (docs/spec.md, "Rule 12: Balance"): the day's label mix against the trailing days'
    (`trailing_counts`, summed over `trailing_days` days). A label whose share moved by more than
    max_label_mix_change warns: the evaluator or the service changed. Skewed traffic is normal
    (the training set caps it); days or trailing windows under min_records_for_label_mix are
    not compared."""
    counts = {label: count for label, count in label_counts.items() if count > 0}
    trailing = {label: count for label, count in trailing_counts.items() if count > 0}
    total, trailing_total = sum(counts.values()), sum(trailing.values())
    shares, trailing_shares = _shares(counts), _shares(trailing)
    compared = total >= settings.min_records_for_label_mix and trailing_total >= settings.min_records_for_label_mix
    changes = {
        label: shares.get(label, 0.0) - trailing_shares.get(label, 0.0) for label in sorted({*counts, *trailing})
    } if compared else {}
    labels = [
        {
            "label": label,
            "count": counts.get(label, 0),
            "share": round(shares.get(label, 0.0), 4),
            "trailing_share": round(trailing_shares[label], 4) if label in trailing_shares else None,
            "label_weight": label_weights.get(label),
        }
        for label in sorted({*counts, *trailing}, key=lambda label: (-counts.get(label, 0), label))
    ]
    metadata: dict = {
        "records": total,
        "labels": labels,
        "trailing_days": trailing_days,
        "trailing_records": trailing_total,
        "max_label_mix_change": settings.max_label_mix_change,
        "min_records_for_label_mix": settings.min_records_for_label_mix,
    }
    mix = ", ".join(f"{row['label']} {row['share']:.1%}" for row in labels if row["count"])
    if total < settings.min_records_for_label_mix:
        return Verdict(
            LABEL_BALANCE,
            True,
            WARN,
            f"label_balance: not compared, {total} exported records is fewer than min_records_for_label_mix "
            f"{settings.min_records_for_label_mix} (the day is too small to judge)",
            metadata,
        )
    if not compared:
        return Verdict(
            LABEL_BALANCE,
            True,
            WARN,
            f"label_balance: {total} records ({mix}); not compared: the {trailing_days} trailing days exported "
            f"{trailing_total} records, fewer than min_records_for_label_mix {settings.min_records_for_label_mix}",
            metadata,
        )
    moved, change = max(changes.items(), key=lambda item: (abs(item[1]), item[0]))
    metadata.update(largest_change_label=moved, largest_change_points=round(100 * change, 2))
    against = (
        f"{moved} {shares.get(moved, 0.0):.1%} of {total} records against {trailing_shares.get(moved, 0.0):.1%} over the "
        f"{trailing_days} trailing days ({trailing_total} records), {100 * change:+.1f} points"
    )
    if abs(change) > settings.max_label_mix_change:
        return Verdict(
            LABEL_BALANCE,
            False,
            WARN,
            f"label_balance: the label mix jumped: {against}, more than max_label_mix_change "
            f"{100 * settings.max_label_mix_change:g} points (did the evaluator or the service change?); the day is exported",
            metadata,
        )
    return Verdict(LABEL_BALANCE, True, WARN, f"label_balance: {total} records ({mix}); largest change {against}", metadata)


# --- export format ----------------------------------------------------------------------------
class _JsonlRecord(msgspec.Struct):  # more fields may follow; these must be there
    prompt: str
    completion: str
    label: str
    confidence: float
    score: float
    sample_weight: float
    label_weight: float
    sample_id: str
    request_id: str
    date: str
    question: str
    completion_strategy: str
    completion_model: str  # "" when no model wrote it: a type that is the same on every day


_RECORD_DECODER = msgspec.json.Decoder(_JsonlRecord)
EXAMPLES_KEPT = 5


@dataclass
class FormatReport:
    """What is wrong with the lines of a JSONL file: counts by problem and a few examples."""

    lines: int = 0
    problems: Counter = field(default_factory=Counter)
    examples: list[tuple[int, str]] = field(default_factory=list)  # (line number, problem)

    def add(self, line: int, problem: str) -> None:
        self.problems[problem.split(":")[0]] += 1
        if len(self.examples) < EXAMPLES_KEPT:
            self.examples.append((line, problem))

    def merge(self, other: FormatReport, line_offset: int) -> None:
        self.lines += other.lines
        self.problems.update(other.problems)
        for line, problem in other.examples:
            if len(self.examples) < EXAMPLES_KEPT:
                self.examples.append((line + line_offset, problem))

    @property
    def bad_lines(self) -> int:
        return sum(self.problems.values())


def check_jsonl_lines(lines: Iterable[bytes], day: str) -> FormatReport:
    """Every line parses as one record of docs/spec.md, "Rule 7: Record", with the right types, a non-empty
    prompt and completion, the question inside the prompt and the partition's date."""
    report = FormatReport()
    for number, raw in enumerate(lines, 1):
        report.lines += 1
        try:
            record = _RECORD_DECODER.decode(raw)
        except msgspec.ValidationError as error:
            report.add(number, f"wrong_field: {error}")
            continue
        except msgspec.DecodeError as error:
            report.add(number, f"not_json: {error}")
            continue
        if not record.prompt.strip() or not record.completion.strip():
            report.add(number, "empty_text: prompt or completion is empty")
        elif record.question not in record.prompt:
            report.add(number, "question_not_in_prompt: the prompt does not contain the question")
        elif record.date != day:
            report.add(number, f"wrong_date: date {record.date!r} in the file of {day}")
    return report


def export_format_verdict(report: FormatReport, severity: Severity) -> Verdict:
    metadata = {
        "lines": report.lines,
        "bad_lines": report.bad_lines,
        "problems": dict(report.problems),
        "examples": [f"line {line}: {problem}"[:300] for line, problem in report.examples],
        "required_fields": list(samples.JSONL_FIELDS),
    }
    if report.bad_lines:
        kinds = ", ".join(f"{kind} {count}" for kind, count in report.problems.most_common())
        first_line, first_problem = report.examples[0]
        return Verdict(
            EXPORT_FORMAT,
            False,
            severity,
            f"export_format: {report.bad_lines} of {report.lines} lines are not valid records ({kinds}); "
            f"first at line {first_line}: {first_problem[:200]}",
            metadata,
        )
    return Verdict(EXPORT_FORMAT, True, severity, f"export_format: all {report.lines} lines are valid records", metadata)
