"""The training sensor on a real instance: threshold, one run per dataset, failures, consumption,
held-back days, and the training job it launches (on the tiny local model)."""

import dagster as dg

from rag_sft.assets.training import DATASET_TAG
from rag_sft.io.model_registry import ModelRegistry
from rag_sft.resources import LoraTraining
from rag_sft.sensors.training import lora_training_sensor
from rag_sft_tests.assets.test_pipeline import generate

FAST = {"learning_rate": 5e-3, "epochs": 2, "max_length": 96, "batch_size": 16}


def evaluate(pipeline, cursor, **settings):
    lora_training = LoraTraining(**settings)
    context = dg.build_sensor_context(instance=pipeline.instance, cursor=cursor, resources={"lora_training": lora_training})
    result = lora_training_sensor(context)
    return result, context.cursor


def test_the_sensor_fires_once_per_dataset_and_failed_training_does_not_consume(pipeline, tiny_base):
    generate(pipeline, days=["2026-11-18", "2026-11-19"], events_per_day=150)
    exported = {}
    for day in ("2026-11-18", "2026-11-19"):
        result = pipeline.materialize(day)
        exported[day] = pipeline.metadata(result, "sft_jsonl")
    total = sum(m["dagster/row_count"] for m in exported.values())

    skipped, _ = evaluate(pipeline, None, min_new_samples=10_000)
    assert isinstance(skipped, dg.SkipReason) and skipped.skip_message == f"{total} of 10000 new samples"

    request, cursor = evaluate(pipeline, None, min_new_samples=100)
    assert isinstance(request, dg.RunRequest)
    days = request.run_config["ops"]["training_dataset"]["config"]["days"]
    assert days == {day: m["sha256"] for day, m in exported.items()}
    again, _ = evaluate(pipeline, None, min_new_samples=100)  # the tick evaluated twice
    assert again.run_key == request.run_key
    tags = {**request.tags, "dagster/sensor_name": "lora_training_sensor", "dagster/run_key": request.run_key}

    # A training run that fails (here: a base model that does not exist) consumes nothing.
    failed = pipeline.train(LoraTraining(base_model=str(pipeline.root / "no-such-model")), request.run_config, tags)
    assert not failed.success
    retry, cursor = evaluate(pipeline, cursor, min_new_samples=100)
    assert isinstance(retry, dg.RunRequest) and retry.run_key != request.run_key and retry.run_key.endswith("-2")

    trained = pipeline.train(
        LoraTraining(base_model=str(tiny_base), **FAST), retry.run_config, {**retry.tags, "dagster/run_key": retry.run_key}
    )
    assert trained.success
    registry = ModelRegistry(pipeline.data / "models")
    [version] = registry.versions()
    assert version["version"] == "v0001" and version["status"] in ("promoted", "rejected") and version["reason"]
    assert version["dataset_hash"] == request.tags[DATASET_TAG] and version["eval_loss"] < version["base_eval_loss"]
    assert registry.current() == ("v0001" if version["status"] == "promoted" else None)
    for name in ("adapter/adapter_config.json", "tokenizer/tokenizer_config.json", "training_config.json", "metrics.json", "dataset.json"):
        assert (pipeline.data / "models" / "v0001" / name).exists(), name

    consumed, cursor = evaluate(pipeline, cursor, min_new_samples=100)
    assert consumed.skip_message == "0 of 100 new samples"

    # Re-materializing a day with the same content brings nothing new; a held-back day counts for nothing.
    pipeline.materialize("2026-11-19")
    generate(pipeline, days=["2026-11-20"], events_per_day=300, factuality_share=0.95)
    assert not pipeline.materialize("2026-11-20", raise_on_error=False).success
    still, _ = evaluate(pipeline, cursor, min_new_samples=100)
    assert still.skip_message == "0 of 100 new samples"


def test_the_training_job_reports_its_figures(pipeline, tiny_base):
    generate(pipeline, days=["2026-11-19"], events_per_day=150)
    pipeline.materialize("2026-11-19")
    result = pipeline.train(LoraTraining(base_model=str(tiny_base), **FAST))
    assert result.success
    dataset = pipeline.metadata(result, "training_dataset")
    assert dataset["days"] == ["2026-11-19"] and dataset["train_records"] > 0 and dataset["eval_records"] > 0
    adapter = pipeline.metadata(result, "lora_adapter")
    assert len(adapter["loss_per_epoch"]) == 2 and adapter["tokens_per_second"] > 0 and adapter["trainable_parameters"] > 0
    evaluation = pipeline.metadata(result, "model_evaluation")
    assert evaluation["eval_loss"] < evaluation["base_eval_loss"]
    assert evaluation["decision"] and evaluation["version"] == "v0001"
