"""Balance by selection (docs/spec.md, "Rule 12: Balance"): a skewed training set keeps the largest subset that passes
train_label_balance, chosen by sample_id alone; what no subset can fix fails the check."""

import random

import pytest

from rag_sft.core import balance

GATE = balance.BalanceSettings()
# A window of real traffic: about 90% of the low scores that pass the confidence filter are
# factuality errors.
REAL_DAY = {"factuality_error": 1620, "incomplete_answer": 72, "low_relevance": 54, "overconfidence": 36, "unspecified": 18}


def test_a_window_of_real_traffic_keeps_every_minor_label_and_caps_the_dominant_one_to_pass():
    assert not balance.balance_verdict(REAL_DAY, {}, GATE).passed
    caps = balance.label_caps(REAL_DAY, GATE)
    minor = {label: count for label, count in REAL_DAY.items() if label != "factuality_error"}
    assert {label: caps[label] for label in minor} == minor  # nothing of the other labels is lost
    # 180 other records: a share of 60% allows 270 factuality errors, and 270 / 18 > 10 does
    # not, so the ratio's cap (10 x 18 = 180) binds.
    assert caps["factuality_error"] == 180
    assert balance.balance_verdict(caps, {}, GATE).passed


@pytest.mark.parametrize("seed", range(300))
def test_caps_pass_the_check_and_no_larger_common_cap_would(seed):
    rng = random.Random(seed)
    labels = ["factuality_error", "incomplete_answer", "low_relevance", "overconfidence", "unspecified", "citation_missing"]
    counts = {label: rng.choice([0, 1, 3, rng.randint(1, 40), rng.randint(1, 400), rng.randint(1, 4000)]) for label in labels}
    gate = balance.BalanceSettings(max_label_share=rng.choice([0.3, 0.5, 0.6, 0.9]), max_imbalance_ratio=rng.choice([2, 5, 10]))
    caps = balance.label_caps(counts, gate)
    total = sum(counts.values())
    if caps is None:
        assert total >= gate.min_records_for_balance and not balance.balance_verdict(counts, {}, gate).passed
        return
    assert all(0 <= caps[label] <= count for label, count in counts.items() if count)
    if total < gate.min_records_for_balance or balance.balance_verdict(counts, {}, gate).passed:
        assert caps == {label: count for label, count in counts.items() if count}  # nothing to cap
        return
    kept = {label: cap for label, cap in caps.items() if cap}
    assert sum(kept.values()) >= gate.min_records_for_balance
    assert balance.balance_verdict(kept, {}, gate).passed
    capped = balance.over_cap(counts, caps)
    one_more = {label: caps[label] + (label in capped) for label in caps}
    assert not balance.balance_verdict(one_more, {}, gate).passed  # the caps are as large as can be


def test_a_window_whose_balanced_subset_is_too_small_to_judge_is_not_capped():
    counts = {"factuality_error": 400, "incomplete_answer": 8, "low_relevance": 6}
    assert balance.label_caps(counts, GATE) is None  # 21 + 8 + 6 = 35 records: under 50, the check fails instead
    assert "cannot balance" in balance.summary(counts, None)


def test_a_stray_label_does_not_trip_the_imbalance_ratio_and_is_reported():
    counts = {"factuality_error": 300, "incomplete_answer": 260, "low_relevance": 210, "overconfidence": 150,
              "hallucinated_citation": 1}
    verdict = balance.balance_verdict(counts, {}, GATE)
    assert verdict.passed, verdict.description
    assert "hallucinated_citation (1)" in verdict.description and verdict.metadata["rare_labels"] == {"hallucinated_citation": 1}
    assert verdict.metadata["imbalance_ratio"] == 2.0  # 300 / 150
    assert balance.label_caps(counts, GATE) == counts
    # With the label at min_label_count it is judged again.
    judged = balance.balance_verdict({**counts, "hallucinated_citation": 5}, {}, GATE)
    assert not judged.passed and "60.0 times hallucinated_citation (5)" in judged.description


def test_the_surplus_is_chosen_by_sample_id_alone():
    rows = [(f"req-{n:05d}_factuality_error", "factuality_error") for n in range(1000)]
    rows += [(f"req-{n:05d}_incomplete_answer", "incomplete_answer") for n in range(1000, 1100)]
    first = balance.capped_out(rows, {"factuality_error": 150})
    shuffled = list(rows)
    random.Random(2).shuffle(shuffled)
    assert balance.capped_out(shuffled, {"factuality_error": 150}) == first  # not the order rows come in
    factuality = {sample_id for sample_id, label in rows if label == "factuality_error"}
    assert len(first) == 1000 - 150 and first <= factuality
    # The kept ones are those ranked first, whatever their request ids look like.
    kept = sorted(factuality - first, key=balance.selection_rank)
    assert max(map(balance.selection_rank, kept)) < min(map(balance.selection_rank, first))
    assert kept != sorted(factuality)[:150]  # not simply the first ids
