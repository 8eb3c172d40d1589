"""The rules that decide whether a day's records may be exported (README, "Asset checks").

Each rule returns a `Verdict`: passed or not, the severity it fails with, a description that
names the rule, the numbers and the threshold, and plain metadata for the UI. A verdict that
fails at ERROR holds the day back; at WARN the day goes through with a warning.
"""

from __future__ import annotations

import math
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
    max_label_share: float = 0.6
    max_imbalance_ratio: float = 10.0
    min_records_for_balance: int = 50
    min_label_count: int = 5  # rarer labels are reported, not held against the imbalance ratio
    confidence_severity: Severity = ERROR
    label_balance_severity: Severity = ERROR
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


def _share_passes(top_count: int, total: int, settings: CheckSettings) -> bool:
    return top_count / total <= settings.max_label_share


def _ratio_passes(top_count: int, rare_count: int, settings: CheckSettings) -> bool:
    return top_count / rare_count <= settings.max_imbalance_ratio


def _ratio_judged(counts: Mapping[str, int], settings: CheckSettings) -> dict[str, int]:
    """The labels the imbalance ratio is judged on: a handful of stray records of a label must
    not hold back a healthy day (300 times a label seen once)."""
    return {label: count for label, count in counts.items() if count >= settings.min_label_count}


def label_caps(label_counts: Mapping[str, int], settings: CheckSettings) -> dict[str, int] | None:
    """The most records of each label a day may export and pass `label_balance_verdict`: the
    dominant labels are cut down to a common cap (and to max_imbalance_ratio times the rarest
    judged label). The counts themselves when the day passes or is too small to judge; None when
    no subset of at least min_records_for_balance records passes (the day stays held back)."""
    counts = {label: count for label, count in label_counts.items() if count > 0}
    total = sum(counts.values())
    if total < settings.min_records_for_balance or label_balance_verdict(counts, {}, settings).passed:
        return counts
    judged = _ratio_judged(counts, settings)
    ratio_cap = math.floor(settings.max_imbalance_ratio * min(judged.values())) if judged else total
    capped = [min(count, ratio_cap) for count in counts.values()]

    def share_passes_at(cap: int) -> bool:  # the labels above a common cap, cut down to it
        return _share_passes(cap, sum(min(count, cap) for count in capped), settings)

    # share(X) = X / sum(min(count, X)) only grows with X (each step adds at most one X per label
    # above it), so the common caps that pass are 1..X*: the largest is found by bisection.
    low, high = 0, max(capped)
    while low < high:
        middle = (low + high + 1) // 2
        low, high = (middle, high) if share_passes_at(middle) else (low, middle - 1)
    cap = low
    caps = {label: min(count, ratio_cap, cap) for label, count in counts.items()}
    balanced = {label: count for label, count in caps.items() if count > 0}
    if sum(balanced.values()) < settings.min_records_for_balance or not label_balance_verdict(balanced, {}, settings).passed:
        return None
    return caps


def label_balance_verdict(
    label_counts: Mapping[str, int], label_weights: Mapping[str, float], settings: CheckSettings
) -> Verdict:
    """No label above max_label_share of the exported records, and the most frequent label at
    most max_imbalance_ratio times the least frequent one with at least min_label_count records
    (rarer labels are reported); small days are not judged."""
    counts = {label: count for label, count in label_counts.items() if count > 0}
    total = sum(counts.values())
    labels = [
        {"label": label, "count": count, "share": round(count / total, 4), "label_weight": label_weights.get(label)}
        for label, count in sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    ]
    metadata: dict = {
        "records": total,
        "labels": labels,
        "max_label_share": settings.max_label_share,
        "max_imbalance_ratio": settings.max_imbalance_ratio,
        "min_records_for_balance": settings.min_records_for_balance,
        "min_label_count": settings.min_label_count,
    }
    if total < settings.min_records_for_balance:
        return Verdict(
            LABEL_BALANCE,
            True,
            settings.label_balance_severity,
            f"label_balance: not judged, {total} exported records is fewer than min_records_for_balance "
            f"{settings.min_records_for_balance} (the day is too small to judge)",
            metadata,
        )
    top_label, top_count = max(counts.items(), key=lambda item: (item[1], item[0]))
    top_share = top_count / total
    judged = _ratio_judged(counts, settings)
    rare = {label: count for label, count in counts.items() if label not in judged}
    metadata.update(top_label=top_label, top_share=round(top_share, 4), rare_labels=dict(sorted(rare.items())))
    problems = []
    if not _share_passes(top_count, total, settings):
        problems.append(
            f"{top_label} is {top_share:.1%} of {total} exported records, above max_label_share {settings.max_label_share:.0%}"
        )
    ratio_text = "imbalance ratio not judged (no label has min_label_count records)"
    if judged:
        rare_label, rare_count = min(judged.items(), key=lambda item: (item[1], item[0]))
        ratio = top_count / rare_count
        metadata.update(imbalance_ratio=round(ratio, 2))
        ratio_text = f"imbalance ratio {ratio:.1f}"
        if not _ratio_passes(top_count, rare_count, settings):
            problems.append(
                f"{top_label} ({top_count}) is {ratio:.1f} times {rare_label} ({rare_count}), "
                f"above max_imbalance_ratio {settings.max_imbalance_ratio:g}"
            )
    rare_text = ""
    if rare:
        listed = ", ".join(f"{label} ({count})" for label, count in sorted(rare.items(), key=lambda item: (item[1], item[0])))
        rare_text = f"; under min_label_count {settings.min_label_count}, not judged for the ratio: {listed}"
    if problems:
        return Verdict(
            LABEL_BALANCE, False, settings.label_balance_severity, "label_balance: " + "; ".join(problems) + rare_text, metadata
        )
    return Verdict(
        LABEL_BALANCE,
        True,
        settings.label_balance_severity,
        f"label_balance: {len(counts)} labels over {total} records, largest {top_label} {top_share:.1%}, "
        f"{ratio_text}{rare_text}",
        metadata,
    )


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
    """Every line parses as one record of SPEC.md rule 7 with the right types, a non-empty
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
