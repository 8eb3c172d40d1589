"""The promotion gate and the dataset's identity (the split: test_training_split.py)."""

from rag_sft.core.promotion import promotion_decision
from rag_sft.core.training_data import dataset_hash

BASE = {"factuality_error": 7.0, "low_relevance": 7.2}


def test_a_version_better_overall_with_no_label_regressing_is_promoted():
    decision = promotion_decision(7.1, 6.5, BASE, {"factuality_error": 6.4, "low_relevance": 6.6}, 0.05)
    assert decision.promote and "6.5000 beats the base model's 7.1000" in decision.reason


def test_no_better_overall_is_rejected():
    decision = promotion_decision(7.1, 7.1, BASE, BASE, 0.05)
    assert not decision.promote and "does not beat" in decision.reason


def test_a_label_regressing_beyond_the_tolerance_is_rejected_with_the_numbers():
    decision = promotion_decision(7.1, 6.0, BASE, {"factuality_error": 5.0, "low_relevance": 7.3}, 0.05)
    assert not decision.promote
    assert "label low_relevance regresses by 0.1000 (7.2000 -> 7.3000), above the tolerance 0.05" in decision.reason
    assert promotion_decision(7.1, 6.0, BASE, {"factuality_error": 5.0, "low_relevance": 7.3}, 0.2).promote


def test_the_dataset_hash_depends_on_days_and_contents_only():
    assert dataset_hash({"2026-11-18": "a", "2026-11-19": "b"}) == dataset_hash({"2026-11-19": "b", "2026-11-18": "a"})
    assert dataset_hash({"2026-11-18": "a"}) != dataset_hash({"2026-11-18": "b"})
