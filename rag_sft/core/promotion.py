"""The eval-loss comparison: what is measured when no judge is configured (`core/model_comparison.py`
judges answers instead). The comparison is with the model in use, never the base alone. A lower
eval loss says the candidate imitates the held-out completions better, not that its answers are
right, so without a judge nothing is promoted automatically: the version waits for review."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Decision:
    promote: bool
    reason: str
    # Neither promoted nor rejected: left a candidate for a person (`rag-sft model promote VERSION`).
    review: bool = False


def promotion_decision(
    base_loss: float,
    adapter_loss: float,
    base_by_label: Mapping[str, float],
    adapter_by_label: Mapping[str, float],
    max_label_regression: float,
    in_use: str = "the base model",
) -> Decision:
    """Promote when the adapter's eval loss beats the model in use's (`base_*`: its losses)
    overall and no label's eval loss rises by more than `max_label_regression` (nats)."""
    if not adapter_loss < base_loss:
        return Decision(False, f"eval loss {adapter_loss:.4f} does not beat {in_use}'s {base_loss:.4f}")
    regressions = {
        label: adapter_by_label[label] - base
        for label, base in base_by_label.items()
        if label in adapter_by_label and adapter_by_label[label] - base > max_label_regression
    }
    if regressions:
        worst = max(regressions, key=regressions.get)
        return Decision(
            False,
            f"label {worst} regresses by {regressions[worst]:.4f} "
            f"({base_by_label[worst]:.4f} -> {adapter_by_label[worst]:.4f}), above the tolerance {max_label_regression}"
            + (f"; also {', '.join(sorted(set(regressions) - {worst}))}" if len(regressions) > 1 else ""),
        )
    return Decision(
        True, f"eval loss {adapter_loss:.4f} beats {in_use}'s {base_loss:.4f} and no label regresses"
    )
