"""What `model_evaluation` concludes, the pure half (docs/model-gate.md): without a judge, the
eval-loss comparison recorded for a person's review; with one, the numbers the registry keeps.
The judged decision itself is `model_comparison.judged_gate`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from rag_sft.core.model_comparison import Difference, ModelRun, PairedTest, format_table, summarize
from rag_sft.core.promotion import Decision, promotion_decision


def unjudged_outcome(
    version: str,
    in_use_key: str,
    in_use_name: str,
    losses: Mapping,  # model -> EvalLosses (overall, by_label)
    answers: Mapping[str, Sequence],  # model -> generated answers (latency_s, tokens)
    max_label_regression: float,
) -> tuple[Decision, list[dict]]:
    """No judge: a lower eval loss only says the candidate imitates the completions better, so a
    person decides; the A/B columns hold latency and length only."""
    compared = promotion_decision(
        losses[in_use_key].overall,
        losses["candidate"].overall,
        losses[in_use_key].by_label,
        losses["candidate"].by_label,
        max_label_regression,
        in_use=in_use_name,
    )
    decision = Decision(
        False,
        f"no judge configured: left a candidate for review (rag-sft model promote {version}); "
        f"eval loss against {in_use_name}: {compared.reason}",
        review=True,
    )
    summaries = [
        summarize(ModelRun(name, [None] * len(generated), [g.latency_s for g in generated], [g.tokens for g in generated]))
        for name, generated in answers.items()
    ]
    return decision, summaries


def registry_record(
    losses: Mapping,
    in_use_key: str,
    in_use_name: str,
    judge: str | None,
    summaries: list[dict],
    differences: Mapping[str, Difference],
    table: list[dict],
    kappa: dict | None,
    test: PairedTest | None,
    replay_test: PairedTest | None,
    warnings: list[str],
    answers_per_s: Mapping[str, float],
    eval_composition: list[dict],
) -> dict:
    """What the model registry keeps of an evaluation (`rag-sft model list` reads it)."""
    return {
        "eval_loss": round(losses["candidate"].overall, 5),
        "base_eval_loss": round(losses["base"].overall, 5),
        "in_use_eval_loss": round(losses[in_use_key].overall, 5),
        "in_use": in_use_name,
        "eval_loss_by_label": {k: round(v, 5) for k, v in losses["candidate"].by_label.items()},
        "judge": judge,
        "ab": summaries,
        "ab_change": {label: d.__dict__ for label, d in differences.items()},
        "ab_table": format_table(table),
        "judge_kappa": kappa,
        "gate_test": test.summary() if test else None,
        "replay_test": replay_test.summary() if replay_test else None,
        "judge_warnings": warnings,
        "answers_per_s": dict(answers_per_s),
        "eval_composition": eval_composition,
    }
