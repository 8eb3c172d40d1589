"""Sample-level constants and the day-level label weights."""

from __future__ import annotations

from collections.abc import Mapping

from rag_sft.core import rules
from rag_sft.core.rules import RuleSettings

EXPORTED = "exported"
FILTERED = "filtered"
# Would have been exported, but the day failed an export check at ERROR (`held_back_by` names it).
HELD_BACK = "held_back"

# One line of the daily JSONL (docs/spec.md, "Rule 7: Record"), in this order.
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

# `completion_model` in the JSONL of a completion no model wrote (the naive strategy's).
NO_COMPLETION_MODEL = ""

# One line of the daily preference-pair file (DPO): key -> SFT_RECORDS column ("date": the day).
PREFERENCE_FIELDS = {
    "prompt": "prompt",
    "chosen": "completion",
    "rejected": "original_answer",
    "label": "label",
    "sample_id": "sample_id",
    "request_id": "request_id",
    "date": "date",
    "completion_model": "completion_model",
}


def label_weights_for(label_counts: Mapping[str, int], settings: RuleSettings) -> dict[str, float]:
    return rules.label_weights(
        label_counts,
        settings.label_rarity_factor,
        settings.label_base_weights,
        settings.default_label_base_weight,
    )
