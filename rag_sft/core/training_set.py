"""The training set of a version: the pure half of `training_dataset` (docs/training.md, "The
training dataset").

From the window's records (a person's corrections already applied) to what the asset writes:
the replay set's new failures (a share of the question groups, never trained on), the
completions that can be right, the question-group split, the label caps and weights, the
served prompts, and the verdicts of the two blocking checks. Question groups are computed once,
over the whole window, and serve both the replay set and the split.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from rag_sft.core import balance, corrections, replay, rules, training_data
from rag_sft.core.checks import Verdict
from rag_sft.core.rules import RuleSettings


@dataclass(frozen=True)
class TrainingSetSettings:
    eval_share: float
    replay_share: float
    similarity: float  # near-duplicate threshold of the question groups
    balance: balance.BalanceSettings
    rules: RuleSettings
    max_label_weight: float
    train_on_naive: bool
    served_prompt_share: float
    served_prompt_template: str


@dataclass
class TrainingSet:
    train: list[dict] = field(default_factory=list)
    eval: list[dict] = field(default_factory=list)  # stratified order: any prefix draws from every day and label
    replayed: list[dict] = field(default_factory=list)  # this window's failures set aside for the replay set
    strategies: Counter = field(default_factory=Counter)  # completions taken, by strategy
    left_out: Counter = field(default_factory=Counter)  # completions that cannot be right, by strategy
    label_counts: dict[str, Counter] = field(default_factory=dict)  # "train" / "eval" -> label -> records
    label_weights: dict[str, float] = field(default_factory=dict)
    label_capped: Counter = field(default_factory=Counter)  # train records over their label's cap, by label
    eval_composition: list[dict] = field(default_factory=list)
    served_prompts: int = 0  # train records taught on the served prompt
    question_groups: int = 0
    held_out_variants: int = 0
    caps: str = ""
    verdicts: list[Verdict] = field(default_factory=list)  # train_label_balance, eval_leakage


def build(rows: Sequence[dict], settings: TrainingSetSettings) -> TrainingSet:
    """The training set of `rows`; with no completion that can be right, one holding only what
    was left out (the caller refuses it, saying why)."""
    keys = training_data.question_keys([row["question"] for row in rows])
    groups = training_data.question_groups(keys, settings.similarity)
    built = TrainingSet()
    trainable, trainable_keys = [], []
    for row, key in zip(rows, keys):
        if replay.is_replay(groups[key], settings.replay_share):
            built.replayed.append(row)  # a failure, whatever its completion
            continue
        strategy = row.get("completion_strategy")
        if corrections.can_train(strategy, settings.train_on_naive):
            built.strategies[strategy] += 1
            trainable.append(row)
            trainable_keys.append(key)
        else:
            built.left_out[strategy] += 1
    if not trainable:
        return built
    window = [training_data.WindowRecord(r["sample_id"], r["question"], r["label"], r["date"]) for r in trainable]
    split = training_data.split_window(window, settings.eval_share, settings.similarity, settings.balance, groups)
    built.train = [_as_served(trainable[index], settings) for index in split.train]
    built.served_prompts = sum(row is not trainable[index] for row, index in zip(built.train, split.train))
    built.eval = [trainable[index] for index in split.eval]
    built.label_counts = {
        name: Counter(window[index].label for index in indexes) for name, indexes in (("train", split.train), ("eval", split.eval))
    }
    weights = training_data.training_label_weights(built.label_counts["train"], settings.rules, settings.max_label_weight)
    built.label_weights = {label: round(weight, 6) for label, weight in weights.items()}
    built.label_capped = Counter(window[index].label for index in split.label_capped)
    built.eval_composition = training_data.composition([window[index] for index in split.eval])
    built.question_groups, built.held_out_variants, built.caps = split.question_groups, len(split.held_out_variants), split.caps
    built.verdicts = [
        balance.balance_verdict(built.label_counts["train"], built.label_weights, settings.balance),
        training_data.leakage_verdict(
            [row["question"] for row in built.train], [row["question"] for row in built.eval], settings.similarity
        ),
    ]
    return built


def _as_served(row: dict, settings: TrainingSetSettings) -> dict:
    """The record with the prompt the service sends, for its share of the train records."""
    if not training_data.trains_on_served_prompt(row["sample_id"], settings.served_prompt_share):
        return row
    return {**row, "prompt": rules.served_prompt(row["prompt"], settings.served_prompt_template)}
