"""The replay set: chosen by question group, never trained on, growing and bounded; and the gate's
replay row, decided by the same exact test."""

import pytest

from rag_sft.core import rules
from rag_sft.core.model_comparison import (
    JUDGED_LABELS,
    GateSettings,
    LabelAgreement,
    Verdict,
    compare,
    judged_gate,
    paired_flags_test,
    paired_test,
)
from rag_sft.core.replay import grown, is_replay, still_failing
from rag_sft_tests.core.test_model_comparison import judged_runs

TRUSTED = {label: LabelAgreement(0.8, 12, 40) for label in JUDGED_LABELS}


def test_retyped_variants_of_a_question_are_replayed_together_and_the_share_holds():
    variants = ["Spring Boot 怎么配置？", "spring boot怎么配置?", "SPRING  BOOT 怎么配置 ?"]
    assert len({is_replay(question, 0.5) for question in variants}) == 1
    chosen = [q for q in (f"问题 {n}?" for n in range(4000)) if is_replay(q, 0.05)]
    assert 140 < len(chosen) < 260
    assert not any(is_replay(f"问题 {n}?", 0.0) for n in range(100))


def test_the_replay_set_grows_with_each_version_keeps_a_failure_once_and_is_bounded():
    first = [{"sample_id": f"a{n}"} for n in range(3)]
    second = grown(first, [{"sample_id": "b0"}, {"sample_id": "a1", "again": True}], max_size=10)
    assert [r["sample_id"] for r in second] == ["a0", "a2", "b0", "a1"] and second[-1]["again"]
    assert [r["sample_id"] for r in grown(second, [{"sample_id": "c0"}], max_size=3)] == ["b0", "a1", "c0"]


def test_a_failure_is_fixed_when_the_answer_no_longer_has_its_label():
    verdicts = [Verdict(frozenset({rules.FACTUALITY_ERROR}), 0.2), Verdict(frozenset(), 0.9), None]
    assert still_failing([rules.FACTUALITY_ERROR, rules.INCOMPLETE_ANSWER, rules.LOW_RELEVANCE], verdicts) == [True, False, None]


def gate_with_replay(fixed: int, broken: int, failures: int = 20):
    candidate, in_use = judged_runs(fixed=12, broken=0)  # the primary metric passes: p = 2/4096
    in_use_failing = [True] * failures
    candidate_failing = [n >= fixed for n in range(failures)]
    for n in range(broken):
        in_use_failing[failures - 1 - n] = False  # the model in use had fixed these; the candidate fails them
    replay = paired_flags_test("replay", candidate_failing, in_use_failing)
    test = paired_test(candidate, in_use, rules.FACTUALITY_ERROR)
    return replay, judged_gate(test, compare(candidate, in_use, resamples=300), "v0001", GateSettings(), TRUSTED, replay)


def test_a_candidate_that_does_not_fix_the_failures_it_was_trained_for_is_not_promoted():
    replay, decision = gate_with_replay(fixed=4, broken=0)
    assert (replay.fixed, replay.broken, replay.p_value) == (4, 0, 0.125)
    assert not decision.promote and "but it does not fix the failures it was trained for: replay set: 4 fixed, 0 broken" in decision.reason
    replay, decision = gate_with_replay(fixed=12, broken=0)
    assert replay.p_value == pytest.approx(2 / 4096)
    assert decision.promote and "replay set: 12 fixed, 0 broken vs v0001 on 20 of 20 failures" in decision.reason
