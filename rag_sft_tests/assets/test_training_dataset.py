"""training_dataset on a real instance (docs/spec.md, "Rule 12: Balance", "Rule 17: Judged as served"): skewed traffic
is exported day by day and balanced in the training set by selection; eval questions come from every day; its blocking
checks keep the adapter from training on a set that fails them."""

import dagster as dg
import orjson

from rag_sft.core import rules

from rag_sft.resources import Evaluator, LoraTraining, SftRules, TrainerExports
from rag_sft_tests.assets.test_pipeline import generate
from rag_sft_tests.conftest import TRAINING_ASSETS

DAYS = ["2026-11-17", "2026-11-18", "2026-11-19"]


def build(pipeline, lora_training=None):
    return dg.materialize(
        TRAINING_ASSETS,
        selection="training_dataset",
        instance=pipeline.instance,
        resources={
            "warehouse": pipeline.resources()["warehouse"],
            "lora_training": lora_training or LoraTraining(train_on_naive_completions=True),  # naive fixtures
            "trainer_exports": TrainerExports(),
            "sft_rules": SftRules(),
            "evaluator": Evaluator(),
        },
        raise_on_error=False,
    )


def test_skewed_days_are_exported_and_the_training_set_is_capped_the_same_on_every_run(pipeline):
    generate(pipeline, days=DAYS, events_per_day=600, factuality_share=0.9)
    for day in DAYS:
        assert pipeline.metadata(pipeline.materialize(day), "sft_records")["export"] == "ok"
    result = build(pipeline)
    assert result.success
    dataset = pipeline.metadata(result, "training_dataset")
    for name in ("train_label_balance", "eval_leakage"):
        check = pipeline.check(result, name)
        assert check.passed and check.severity == dg.AssetCheckSeverity.ERROR, check.description
    train_labels = {row.data["label"]: row.data["count"] for row in dataset["train_labels"].records}
    assert max(train_labels.values()) / sum(train_labels.values()) <= 0.6
    capped = {row.data["label"]: row.data["count"] for row in dataset["label_cap_by_label"].records}
    assert dataset["label_cap"] == sum(capped.values()) > 0 and set(capped) == {"factuality_error"}
    assert dataset["balance"].startswith("capped factuality_error ")
    composition = [row.data for row in dataset["eval_composition"].records]
    assert {row["day"] for row in composition} == set(DAYS)  # not only the first day's questions
    assert sum(row["count"] for row in composition) == dataset["eval_records"]
    folder = pipeline.data.__class__(dataset["path"])
    manifest = orjson.loads((folder / "manifest.json").read_bytes())
    assert manifest["label_cap"] == capped and sum(r["count"] for r in manifest["eval_composition"]) == dataset["eval_records"]
    train = (folder / "train.jsonl").read_bytes()
    assert len(train.splitlines()) == dataset["train_records"] == sum(train_labels.values())

    again = build(pipeline)
    assert pipeline.metadata(again, "training_dataset")["path"] == dataset["path"]
    assert (folder / "train.jsonl").read_bytes() == train

    # Trained as served (the default): no train prompt holds a label's correction instruction.
    instructions = {text for texts in rules.INSTRUCTIONS.values() for text in texts.values()}
    prompts = [orjson.loads(line)["prompt"] for line in train.splitlines()]
    assert dataset["served_prompt_records"] == len(prompts)
    assert all(not any(text in prompt for text in instructions) for prompt in prompts)
    assert all(any(text in prompt for text in rules.SERVED_INSTRUCTION.values()) for prompt in prompts)
    hinted = pipeline.metadata(build(pipeline, LoraTraining(train_on_naive_completions=True, served_prompt_share=0)), "training_dataset")
    assert hinted["served_prompt_records"] == 0 and hinted["path"] != dataset["path"]  # another shape, another folder
    hinted_prompts = [orjson.loads(line)["prompt"] for line in (folder.__class__(hinted["path"]) / "train.jsonl").read_bytes().splitlines()]
    assert all(any(text in prompt for text in instructions) for prompt in hinted_prompts)


def test_a_training_set_that_cannot_be_balanced_fails_its_blocking_check_and_nothing_is_trained(pipeline):
    generate(pipeline, days=DAYS[:1], events_per_day=300, factuality_share=1.0)  # one label only
    pipeline.materialize(DAYS[0])
    result = pipeline.train(LoraTraining(train_on_naive_completions=True))  # naive fixtures
    balance = pipeline.check(result, "train_label_balance")
    assert not balance.passed and balance.severity == dg.AssetCheckSeverity.ERROR
    assert "factuality_error is 100.0% of" in balance.description and "above max_label_share 60%" in balance.description
    assert pipeline.metadata(result, "training_dataset")["balance"].startswith("cannot balance")
    materialized = {event.event_specific_data.materialization.asset_key for event in result.get_asset_materialization_events()}
    assert dg.AssetKey("lora_adapter") not in materialized
