"""A version's training set, built without Dagster (docs/training.md, "The training dataset"):
only completions that can be right, taught on the served prompt, the replay set's failures
never trained on nor judged."""

import random

from rag_sft.core import balance, replay, rules, training_set
from rag_sft.core.rules import RuleSettings
from rag_sft_tests.core.test_training_split import POOL

LABELS = ["factuality_error", "incomplete_answer", "low_relevance"]


def rows(count: int = 300, strategy=lambda n: "llm", seed: int = 3) -> list[dict]:
    rng = random.Random(seed)
    records = []
    for n in range(count):
        question = "".join(rng.choice(POOL) for _ in range(12)) + "怎么办？"
        label = LABELS[n % 3]
        prompt = rules.build_prompt(question, [{"content": f"文档内容{n}。"}], rules.correction_instruction(label, rules.ZH), rules.ZH)
        records.append({"sample_id": f"r{n}_{label}", "question": question, "label": label, "date": "2026-11-19",
                        "prompt": prompt, "completion": f"更正后的回答{n}。", "completion_strategy": strategy(n)})  # fmt: skip
    return records


def settings(**overrides) -> training_set.TrainingSetSettings:
    values = dict(eval_share=0.1, replay_share=0.05, similarity=0.8, balance=balance.BalanceSettings(), rules=RuleSettings(),
                  max_label_weight=5.0, train_on_naive=False, served_prompt_share=1.0, served_prompt_template="")  # fmt: skip
    return training_set.TrainingSetSettings(**{**values, **overrides})


def test_naive_completions_are_left_out_and_counted_unless_opted_in():
    window = rows(strategy=lambda n: "naive" if n % 2 else "llm")
    built = training_set.build(window, settings())
    assert {row["completion_strategy"] for row in built.train + built.eval} == {"llm"}
    assert built.left_out["naive"] > 0 and sum(built.strategies.values()) + sum(built.left_out.values()) + len(built.replayed) == 300
    opted_in = training_set.build(window, settings(train_on_naive=True))
    assert {row["completion_strategy"] for row in opted_in.train} == {"llm", "naive"} and not opted_in.left_out
    nothing = training_set.build(rows(strategy=lambda n: "naive"), settings())
    assert not nothing.strategies and not nothing.train and nothing.left_out["naive"] + len(nothing.replayed) == 300


def test_train_prompts_are_served_prompts_by_default_and_eval_keeps_its_record():
    built = training_set.build(rows(), settings())
    instructions = {text for texts in rules.INSTRUCTIONS.values() for text in texts.values()}
    assert built.served_prompts == len(built.train) > 0
    assert all(rules.SERVED_INSTRUCTION[rules.ZH] in row["prompt"] and not any(i in row["prompt"] for i in instructions) for row in built.train)
    # The eval split keeps the exported prompt: the evaluation serves it as the service would.
    assert all(any(i in row["prompt"] for i in instructions) for row in built.eval)
    hinted = training_set.build(rows(), settings(served_prompt_share=0.0))
    assert hinted.served_prompts == 0 and [r["sample_id"] for r in hinted.train] == [r["sample_id"] for r in built.train]


def test_the_replay_set_is_never_trained_on_nor_judged_and_both_checks_pass():
    built = training_set.build(rows(), settings(replay_share=0.2))
    replayed = {row["sample_id"] for row in built.replayed}
    assert replayed and not replayed & {row["sample_id"] for row in built.train + built.eval}
    assert all(replay.is_replay(row["question"], 0.2) for row in built.replayed)
    assert [verdict.passed for verdict in built.verdicts] == [True, True]
