"""The A/B statistics, the judged gate and the judge's agreement, as plain functions."""

import math

import pytest

from rag_sft.core import rules
from rag_sft.core.model_comparison import (
    Difference,
    GateSettings,
    ModelRun,
    Verdict,
    cohen_kappa,
    compare,
    format_table,
    judged_gate,
    paired_difference,
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
    assert cohen_kappa([False] * 5, [False] * 5) == 1.0
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


def test_the_gate_names_the_metric_and_the_interval():
    settings = GateSettings()
    better = {"factuality_error": Difference(-0.3, -0.45, -0.15, 40), "overconfidence": Difference(0.0, -0.1, 0.1, 40)}
    assert judged_gate(better, "v0001", settings).promote
    worse = {"factuality_error": Difference(0.2, 0.05, 0.35, 40)}
    decision = judged_gate(worse, "v0001", settings)
    assert not decision.promote
    assert decision.reason.startswith("worse than the model in use: factuality_error rate +0.200 vs v0001 (95% CI [+0.050, +0.350]")
    tie = judged_gate({"factuality_error": Difference(-0.05, -0.2, 0.1, 40)}, "v0001", settings)
    assert not tie.promote and tie.reason.startswith("no significant improvement")
    regress = {**better, "overconfidence": Difference(0.1, 0.0, 0.2, 40)}
    decision = judged_gate(regress, "v0001", settings)
    assert not decision.promote and "overconfidence rate +0.100 vs v0001: above the tolerance 0.05" in decision.reason
    decision = judged_gate(better, "v0001", settings, kappa={"factuality_error": 0.9, "overconfidence": 0.4})
    assert not decision.promote and "overconfidence 0.40" in decision.reason
