"""The A/B statistics, the judged gate and the judge's agreement, as plain functions."""

import math

import pytest

from rag_sft.core import rules
from rag_sft.core.model_comparison import (
    JUDGED_LABELS,
    GateSettings,
    LabelAgreement,
    ModelRun,
    Verdict,
    audit_kappa,
    cohen_kappa,
    compare,
    exact_mcnemar_p,
    format_table,
    judge_warnings,
    judged_gate,
    paired_difference,
    paired_test,
    parse_verdict,
    prompt_documents,
    summarize,
    table_rows,
    wilson_interval,
)


def test_a_verdict_is_the_json_asked_for_or_nothing():
    assert parse_verdict('{"labels": ["factuality_error"], "score": 0.2}') == Verdict(frozenset({"factuality_error"}), 0.2)
    assert parse_verdict('```json\n{"labels": [], "score": 1}\n```') == Verdict(frozenset(), 1.0)
    for text in ("The answer looks right.", '{"labels": ["wrong_label"], "score": 0.5}', '{"labels": [], "score": 1.5}',
                 '{"labels": "factuality_error", "score": 0.5}', '{"labels": []}', '[1, 2]', '{"labels": [], "score": true}'):
        assert parse_verdict(text) is None, text


def test_wilson_interval_matches_the_textbook_values():
    low, high = wilson_interval(10, 100)
    assert (low, high) == pytest.approx((0.0552, 0.1744), abs=1e-4)
    assert wilson_interval(0, 20)[0] == 0.0 and 0.15 < wilson_interval(0, 20)[1] < 0.17
    assert all(math.isnan(v) for v in wilson_interval(0, 0))


def test_the_paired_bootstrap_sees_what_the_pairs_share():
    # The candidate fixes 20 of 100 errors and breaks none: significant.
    baseline = [True] * 40 + [False] * 60
    candidate = [False] * 20 + [True] * 20 + [False] * 60
    d = paired_difference(candidate, baseline, seed=1)
    assert d.value == pytest.approx(-0.2) and d.high < 0 and d.pairs == 100
    # Swapping which questions fail leaves the rate and says nothing significant.
    d = paired_difference(baseline[::-1], baseline, seed=1)
    assert d.value == 0 and d.low < 0 < d.high


def test_cohen_kappa_by_hand():
    a = [True, True, False, False, True, False, False, False, True, False]
    b = [True, False, False, False, True, False, True, False, True, False]
    # observed 0.8; expected 0.4*0.4 + 0.6*0.6 = 0.52; kappa = 0.28 / 0.48
    assert cohen_kappa(a, b) == pytest.approx(0.28 / 0.48)
    assert math.isnan(cohen_kappa([False] * 5, [False] * 5))  # both never say it: no evidence of agreement
    assert cohen_kappa([True, False], [False, True]) == pytest.approx(-1.0)


def test_the_docs_of_a_prompt_are_recovered_for_the_judge():
    for language in (rules.ZH, rules.EN):
        docs = [{"content": "first doc\n\nwith a blank line"}, {"content": "second"}]
        prompt = rules.build_prompt("q?", docs, rules.correction_instruction("overconfidence", language), language)
        assert prompt_documents(prompt) == ["first doc\n\nwith a blank line", "second"]


def run(name, errors, n=40, tokens=10):
    labels = [frozenset({"factuality_error"}) if i in errors else frozenset() for i in range(n)]
    return ModelRun(name, [Verdict(label, 0.5) for label in labels], [0.1 * (i % 3 + 1) for i in range(n)], [tokens] * n)


def test_the_table_has_every_rate_with_its_interval_and_the_paired_change():
    candidate, in_use = run("candidate", set(range(5))), run("in use", set(range(20)))
    summaries = [summarize(candidate), summarize(in_use)]
    assert summaries[0]["factuality_error"]["rate"] == 0.125 and summaries[1]["factuality_error"]["rate"] == 0.5
    assert summaries[0]["latency_s"] == {"mean": 0.1975, "p50": 0.2, "p90": 0.3}
    rows = table_rows(summaries, compare(candidate, in_use))
    factuality = next(r for r in rows if r["metric"] == "factuality_error rate")
    assert factuality["candidate"].startswith("0.125 [") and factuality["change"].startswith("-0.375 [")
    text = format_table(rows)
    assert "tokens per answer" in text and "judge cost usd" in text


def judged_runs(fixed: int, broken: int, questions: int = 64, judged: int | None = None) -> tuple[ModelRun, ModelRun]:
    """The candidate and the model in use on `questions` questions: the model in use has a
    factuality error on the first `fixed` (the candidate not), the candidate on the next
    `broken` (the model in use not), both on 8 more; the judge failed on the questions from
    `judged` on."""
    judged = questions if judged is None else judged
    error = frozenset({rules.FACTUALITY_ERROR})

    def verdicts(errors: set[int]) -> list[Verdict | None]:
        return [None if i >= judged else Verdict(error if i in errors else frozenset(), 0.5) for i in range(questions)]

    both = set(range(fixed + broken, fixed + broken + 8))
    candidate = ModelRun("candidate", verdicts(set(range(fixed, fixed + broken)) | both), [0.1] * questions, [5] * questions)
    in_use = ModelRun("v0001", verdicts(set(range(fixed)) | both), [0.1] * questions, [5] * questions)
    return candidate, in_use


TRUSTED = {label: LabelAgreement(0.8, 12, 40) for label in JUDGED_LABELS}


def gate(candidate: ModelRun, in_use: ModelRun, audit=TRUSTED, **settings):
    test = paired_test(candidate, in_use, rules.FACTUALITY_ERROR)
    return test, judged_gate(test, compare(candidate, in_use, resamples=500), "v0001", GateSettings(**settings), audit)


def test_the_exact_mcnemar_p_value_is_the_two_sided_binomial_test_of_the_discordant_pairs():
    assert exact_mcnemar_p(4, 0) == 0.125  # 2 x (1/2)^4
    assert exact_mcnemar_p(12, 0) == pytest.approx(2 / 4096)
    assert exact_mcnemar_p(0, 12) == pytest.approx(2 / 4096)
    assert exact_mcnemar_p(7, 1) == pytest.approx(2 * 9 / 256)  # (C(8,0) + C(8,1)) / 2^8, both tails
    assert exact_mcnemar_p(3, 3) == 1.0 and exact_mcnemar_p(0, 0) == 1.0
    binomtest = pytest.importorskip("scipy.stats").binomtest
    for fixed, broken in ((4, 0), (12, 0), (9, 3), (5, 11), (40, 25)):
        assert exact_mcnemar_p(fixed, broken) == pytest.approx(binomtest(fixed, fixed + broken, 0.5).pvalue)


def test_4_fixed_0_broken_of_64_is_not_significant_and_12_fixed_0_broken_is():
    test, decision = gate(*judged_runs(fixed=4, broken=0))
    assert (test.pairs, test.fixed, test.broken, test.p_value) == (64, 4, 0, 0.125)
    assert not decision.promote and not decision.review
    assert decision.reason.startswith("no significant improvement: factuality_error: 4 fixed, 0 broken vs v0001 on 64 questions")
    assert "p = 0.125, not under alpha 0.05" in decision.reason
    test, decision = gate(*judged_runs(fixed=12, broken=0))
    assert test.p_value == pytest.approx(2 / 4096) and test.coverage == 1.0
    assert decision.promote, decision.reason
    assert not gate(*judged_runs(fixed=12, broken=0), alpha=0.0001)[1].promote


def test_a_significantly_worse_candidate_is_rejected_as_worse():
    _, decision = gate(*judged_runs(fixed=0, broken=12))
    assert not decision.promote and decision.reason.startswith("worse than the model in use: factuality_error: 0 fixed, 12 broken")


def test_60_judge_failures_of_64_questions_refuse_whatever_the_4_left_say():
    # The 4 questions left are all fixed ones: the point estimate looks perfect.
    test, decision = gate(*judged_runs(fixed=4, broken=0, judged=4))
    assert (test.questions, test.pairs, test.fixed) == (64, 4, 4)
    assert not decision.promote and decision.reason.startswith("too few judged questions: 4 of 64 questions judged for both models (6%)")
    # Enough pairs but under the coverage floor: 56 of 64 is 87.5% < 90%.
    test, decision = gate(*judged_runs(fixed=20, broken=0, judged=56))
    assert not decision.promote and decision.reason.startswith("judged coverage too low: 56 of 64 questions judged for both models (88%)")
    assert gate(*judged_runs(fixed=20, broken=0, judged=58))[1].promote  # 58/64 = 90.6%


def test_another_label_must_be_non_inferior_by_the_upper_bound_of_its_interval_not_the_point_estimate():
    candidate, in_use = judged_runs(fixed=12, broken=0)
    # overconfidence: 3 answers of the candidate gain it, 1 loses it: +0.031, under the 0.05 margin as a point
    # estimate, but its interval reaches above the margin.
    for i in (20, 21, 22):
        candidate.verdicts[i] = Verdict(candidate.verdicts[i].labels | {rules.OVERCONFIDENCE}, 0.5)
    in_use.verdicts[23] = Verdict(in_use.verdicts[23].labels | {rules.OVERCONFIDENCE}, 0.5)
    differences = compare(candidate, in_use, resamples=500)
    assert differences[rules.OVERCONFIDENCE].value == pytest.approx(2 / 64) and differences[rules.OVERCONFIDENCE].high >= 0.05
    _, decision = gate(candidate, in_use)
    assert not decision.promote and "overconfidence rate +0.031 (95% CI upper bound" in decision.reason
    assert "not under the margin 0.05" in decision.reason
    assert gate(candidate, in_use, non_inferiority_margin=0.2)[1].promote


def test_a_label_absent_from_the_audit_set_blocks_automatic_promotion():
    # The humans never labelled overconfidence, nor did the judge: today's kappa said 1.0, full agreement.
    human = [frozenset({rules.FACTUALITY_ERROR})] * 15 + [frozenset()] * 25
    judge = [Verdict(h, 0.5) for h in human]
    audit = audit_kappa(human, judge)
    assert audit[rules.FACTUALITY_ERROR] == LabelAgreement(1.0, 15, 40)
    assert math.isnan(audit[rules.OVERCONFIDENCE].kappa) and audit[rules.OVERCONFIDENCE].positives == 0
    _, decision = gate(*judged_runs(fixed=12, broken=0), audit=audit)
    assert not decision.promote and decision.review  # the numbers pass: a person decides
    assert "overconfidence: 0 audited examples, under 10" in decision.reason and "left a candidate for review" in decision.reason


def test_a_tiny_label_slice_or_a_low_kappa_or_no_audit_set_leaves_the_candidate_for_review():
    runs = judged_runs(fixed=12, broken=0)
    tiny = {**TRUSTED, rules.LOW_RELEVANCE: LabelAgreement(1.0, 3, 40)}
    assert "low_relevance: 3 audited examples, under 10" in gate(*runs, audit=tiny)[1].reason
    low = {**TRUSTED, rules.OVERCONFIDENCE: LabelAgreement(0.4, 12, 40)}
    decision = gate(*runs, audit=low)[1]
    assert decision.review and "overconfidence: kappa 0.40" in decision.reason
    decision = gate(*runs, audit=None)[1]
    assert decision.review and not decision.promote and "no audit set" in decision.reason


def test_the_table_shows_the_exact_test_and_the_judged_coverage():
    candidate, in_use = judged_runs(fixed=4, broken=0, judged=60)
    test = paired_test(candidate, in_use, rules.FACTUALITY_ERROR)
    rows = table_rows([summarize(candidate), summarize(in_use)], compare(candidate, in_use, resamples=200), test)
    by_metric = {row["metric"]: row for row in rows}
    assert by_metric["factuality_error exact McNemar"]["change"] == "4 fixed, 0 broken, p = 0.125"
    assert by_metric["judged for both"]["change"] == "60/64 (94%)"


def test_a_judge_that_also_wrote_the_corrections_is_warned_about():
    rows = [{"completion_strategy": "llm", "completion_model": "gpt-4o"}, {"completion_strategy": "naive", "completion_model": ""}]
    [warning] = judge_warnings("gpt-4o", rows)
    assert "the judge model gpt-4o also wrote the corrected answers" in warning
    assert judge_warnings("another-judge", rows) == []
