"""From a normalized event to an annotated sample, and from a sample to an SFT record."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date

from rag_sft.core import rules
from rag_sft.core.rules import RuleSettings

EXPORTED = "exported"
FILTERED = "filtered"


def annotate(event: Mapping, settings: RuleSettings) -> dict:
    """Main label, context docs, instruction, language, confidence and sample_id of one event."""
    label = rules.main_label(event["labels"])
    language = rules.instruction_language(event["question"], settings.instruction_language)
    return {
        "sample_id": rules.sample_id(event["request_id"], label),
        "request_id": event["request_id"],
        "timestamp": event["timestamp"],
        "question": event["question"],
        "original_answer": event["answer"],
        "label": label,
        "labels": event["labels"],
        "language": language,
        "instruction": rules.correction_instruction(label, language),
        "context_docs": rules.select_context(event["docs"], settings.top_k),
        "score": event["score"],
        "confidence": rules.confidence(event["score"], settings.confidence_factor),
        "suggestion": event["suggestion"],
        "checks": event["checks"],
    }


def filter_reason(sample: Mapping, settings: RuleSettings) -> str | None:
    """Why a sample is not exported, or None when it is (SPEC.md rule 4)."""
    if sample["confidence"] < settings.min_confidence:
        return rules.LOW_CONFIDENCE
    return None


def prompt_for(sample: Mapping, settings: RuleSettings) -> str:
    return rules.build_prompt(
        sample["question"],
        sample["context_docs"],
        sample["instruction"],
        sample["language"],
        settings.doc_max_chars,
    )


def sample_weight_for(sample: Mapping, settings: RuleSettings) -> float:
    return rules.sample_weight(
        sample["confidence"],
        settings.weight_baseline,
        settings.weight_below_baseline,
        settings.weight_slope,
        settings.max_sample_weight,
    )


def label_weights_for(label_counts: Mapping[str, int], settings: RuleSettings) -> dict[str, float]:
    return rules.label_weights(
        label_counts,
        settings.label_rarity_factor,
        settings.label_base_weights,
        settings.default_label_base_weight,
    )


JSONL_FIELDS = (
    "prompt",
    "completion",
    "label",
    "confidence",
    "score",
    "sample_weight",
    "label_weight",
    "sample_id",
    "request_id",
    "date",
    "question",
    "completion_strategy",
    "completion_model",
)


def jsonl_record(record: Mapping, day: date | str) -> dict:
    """One line of the daily JSONL (SPEC.md rule 7), fields in a fixed order."""
    line = {name: record.get(name) for name in JSONL_FIELDS}
    line["date"] = str(day)
    return line
