"""Which completions a model may be trained on (docs/spec.md, "Rule 6: Completion";
docs/training.md, "The training dataset").

A `naive` completion is a label prefix followed by the original, wrong answer: training on it
teaches the model to repeat the answer users complained about, and lowers the eval loss while
doing so. A training dataset therefore holds completions that can be right: an `llm`
correction, or a `human` one, a person's corrected answer brought in by sample_id from the
corrections files (`<data_dir>/corrections/*.jsonl`, rows {"sample_id", "completion"}). Naive
records stay in the daily exports, and a trainer may opt in to them explicitly.
"""

from __future__ import annotations

from collections.abc import Mapping

NAIVE = "naive"
HUMAN = "human"
CAN_BE_RIGHT = frozenset({"llm", HUMAN})


def corrected(record: dict, human_corrections: Mapping[str, str]) -> dict:
    """The record with a person's corrected answer in place of its completion, marked `human`,
    when one exists for its sample_id; else the record as it is."""
    completion = human_corrections.get(record["sample_id"])
    if completion is None:
        return record
    return {**record, "completion": completion, "completion_strategy": HUMAN}


def can_train(strategy: str | None, train_on_naive: bool) -> bool:
    """Whether a record whose completion came from `strategy` (after corrections) may enter a
    training dataset."""
    return strategy in CAN_BE_RIGHT or (train_on_naive and strategy == NAIVE)


def nothing_to_train_on(strategies: Mapping[str, int], opt_in: str) -> str:
    """Why a window with no trainable record does not train, and what would change it."""
    listed = ", ".join(f"{count} {strategy}" for strategy, count in sorted(strategies.items())) or "no records"
    return (
        f"no completion that can be right to train on: {listed} (a naive completion is a label prefix + the original, "
        "wrong answer). Write corrections with the llm completion strategy, add a person's corrections under "
        f'<data_dir>/corrections/*.jsonl ({{"sample_id", "completion"}}), or opt in with {opt_in}'
    )
