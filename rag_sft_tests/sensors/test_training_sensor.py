"""The training sensor on a real instance: threshold, one run per dataset, failures, what was
trained on (by sample_id), cancellations, held-back days, a cursor that does not grow, and the
training job it launches (on the tiny local model), with the data on a local disk or on an S3
server."""

import hashlib
import uuid
from datetime import date, timedelta

import dagster as dg
import orjson

from rag_sft.assets.training import DATASET_TAG
from rag_sft.cli.models import format_versions
from rag_sft.io.registry.model_registry import ModelRegistry
from rag_sft.resources import LoraTraining
from rag_sft.sensors.training import TRAINING_JOB, lora_training_sensor
from rag_sft_tests.assets.test_pipeline import generate
from rag_sft_tests.assets.test_s3_warehouse import objects
from rag_sft_tests.conftest import Pipeline
from rag_sft_tests.helpers import event, hold_back_days, write_lines

# The fixtures' completions are naive: these tests check the training mechanics, so they opt in.
FAST = {"learning_rate": 5e-3, "epochs": 2, "max_length": 96, "batch_size": 16, "train_on_naive_completions": True}


def evaluate(pipeline, cursor, **settings):
    lora_training = LoraTraining(**{"train_on_naive_completions": True, **settings})
    resources = {"lora_training": lora_training, "warehouse": pipeline.resources()["warehouse"]}
    with dg.build_sensor_context(instance=pipeline.instance, cursor=cursor, resources=resources) as context:
        result = lora_training_sensor(context)
        return result, context.cursor


def test_the_sensor_fires_once_per_dataset_and_failed_training_does_not_consume(pipeline, tiny_base, monkeypatch):
    generate(pipeline, days=["2026-11-18", "2026-11-19"], events_per_day=150)
    exported = {}
    for day in ("2026-11-18", "2026-11-19"):
        result = pipeline.materialize(day)
        exported[day] = pipeline.metadata(result, "sft_jsonl")
    total = sum(m["dagster/row_count"] for m in exported.values())

    skipped, _ = evaluate(pipeline, None, min_new_samples=10_000)
    assert isinstance(skipped, dg.SkipReason) and skipped.skip_message == f"{total} of 10000 new samples in all 2 exportable days"

    request, cursor = evaluate(pipeline, None, min_new_samples=100)
    assert isinstance(request, dg.RunRequest)
    days = request.run_config["ops"]["training_dataset"]["config"]["days"]
    assert days == {day: m["sha256"] for day, m in exported.items()}
    again, _ = evaluate(pipeline, None, min_new_samples=100)  # the tick evaluated twice
    assert again.run_key == request.run_key
    tags = {**request.tags, "dagster/sensor_name": "lora_training_sensor", "dagster/run_key": request.run_key}

    # A training run that fails (here: a base model that does not exist) consumes nothing.
    failed = pipeline.train(LoraTraining(base_model=str(pipeline.root / "no-such-model"), train_on_naive_completions=True), request.run_config, tags)
    assert not failed.success
    retry, cursor = evaluate(pipeline, cursor, min_new_samples=100)
    assert isinstance(retry, dg.RunRequest) and retry.run_key != request.run_key and retry.run_key.endswith("-2")

    trained = pipeline.train(
        LoraTraining(base_model=str(tiny_base), **FAST), retry.run_config, {**retry.tags, "dagster/run_key": retry.run_key}
    )
    assert trained.success
    registry = ModelRegistry(pipeline.data / "models")
    [version] = registry.versions()
    # No judge: a candidate for review, never promoted by the eval loss alone.
    assert version["version"] == "v0001" and version["status"] == "candidate" and version["reason"]
    assert version["dataset_hash"] == request.tags[DATASET_TAG] and version["eval_loss"] < version["base_eval_loss"]
    assert registry.current() is None
    for name in ("adapter/adapter_config.json", "tokenizer/tokenizer_config.json", "training_config.json", "metrics.json", "dataset.json"):
        assert (pipeline.data / "models" / "v0001" / name).exists(), name

    consumed, cursor = evaluate(pipeline, cursor, min_new_samples=100)
    assert consumed.skip_message == "0 of 100 new samples in all 2 exportable days"

    # Re-materializing a day with the same content brings nothing new; a held-back day counts for nothing.
    pipeline.materialize("2026-11-19")
    generate(pipeline, days=["2026-11-20"], events_per_day=300)
    with monkeypatch.context() as patched:  # a check fails at ERROR on that day
        hold_back_days(patched)
        assert pipeline.metadata(pipeline.materialize("2026-11-20", raise_on_error=False), "sft_records")["day_held_back"] == 1
    still, cursor = evaluate(pipeline, cursor, min_new_samples=100)
    assert still.skip_message == "0 of 100 new samples in all 2 exportable days"

    # A late event changes every line of its day (the label weights move), but only its sample is new.
    late_event = event("late-1", "2026-11-19T23:59:00Z", score=0.9, labels=["incomplete_answer"])
    write_lines(pipeline.landing / "late.jsonl", [late_event])
    late = pipeline.metadata(pipeline.materialize("2026-11-19"), "sft_jsonl")
    assert late["sha256"] != exported["2026-11-19"]["sha256"]
    assert late["dagster/row_count"] == exported["2026-11-19"]["dagster/row_count"] + 1
    one, _ = evaluate(pipeline, cursor, min_new_samples=100)
    assert one.skip_message == "1 of 100 new samples in all 2 exportable days"
    window, _ = evaluate(pipeline, cursor, min_new_samples=100, last_days=1)
    assert window.skip_message == "1 of 100 new samples in the last exportable day (0 more outside the window)"


def test_a_canceled_training_run_is_not_retried_until_the_data_changes(pipeline):
    generate(pipeline, days=["2026-11-18"], events_per_day=150)
    pipeline.materialize("2026-11-18")
    request, cursor = evaluate(pipeline, None, min_new_samples=100)
    canceled = dg.DagsterRun(
        job_name=TRAINING_JOB,
        run_id=str(uuid.uuid4()),
        status=dg.DagsterRunStatus.CANCELED,
        tags={**request.tags, "dagster/run_key": request.run_key},
    )
    pipeline.instance.add_run(canceled)
    skipped, cursor = evaluate(pipeline, cursor, min_new_samples=100)
    assert isinstance(skipped, dg.SkipReason) and "was canceled: not retried until asked" in skipped.skip_message
    assert "Re-execute the canceled run" in skipped.skip_message
    assert evaluate(pipeline, cursor, min_new_samples=100)[0].skip_message == skipped.skip_message

    generate(pipeline, days=["2026-11-19"], events_per_day=150)  # new data: a new dataset
    pipeline.materialize("2026-11-19")
    again, _ = evaluate(pipeline, cursor, min_new_samples=100)
    assert isinstance(again, dg.RunRequest) and again.tags[DATASET_TAG] != request.tags[DATASET_TAG]
    assert again.run_key.endswith("-1")


def test_after_400_days_the_cursor_stays_small_and_unchanged_days_are_not_read_again(pipeline):
    instance = pipeline.instance
    jsonl = {}

    def export(day: str, sample_ids: list[str]) -> None:
        """A published day, as sft_records and sft_jsonl report it (without running them)."""
        path = pipeline.jsonl(day)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"".join(orjson.dumps({"sample_id": sample_id}) + b"\n" for sample_id in sample_ids))
        jsonl[day] = path
        sha256 = hashlib.sha256(path.read_bytes()).hexdigest()
        jsonl_metadata = {"sha256": sha256, "dagster/row_count": len(sample_ids), "published": True}
        for asset, metadata in (("sft_records", {"export": "ok"}), ("sft_jsonl", jsonl_metadata)):
            instance.report_runless_asset_event(dg.AssetMaterialization(asset, partition=day, metadata=metadata))

    days = [(date(2025, 1, 1) + timedelta(days=n)).isoformat() for n in range(400)]
    for day in days:
        export(day, [f"{day}-r{n}_factuality_error" for n in range(3)])
    first, cursor = evaluate(pipeline, None, min_new_samples=10_000)
    assert first.skip_message == "1200 of 10000 new samples in all 400 exportable days"
    assert len(cursor.encode()) < 1024

    # The next ticks read only the days whose export changed: the others' files may be gone.
    for path in jsonl.values():
        path.unlink()
    export(days[-1], [f"{days[-1]}-r{n}_factuality_error" for n in range(4)])
    second, cursor = evaluate(pipeline, cursor, min_new_samples=10_000, last_days=30)
    expected = "91 of 10000 new samples in the last 30 exportable days (1110 more outside the window)"
    assert second.skip_message == expected
    assert len(cursor.encode()) < 1024

    # A file that is not the one its materialization published (changed by hand) is waited for, not counted.
    export(days[0], ["one_factuality_error"])
    jsonl[days[0]].write_bytes(b'{"sample_id": "another_factuality_error"}\n')
    waiting, _ = evaluate(pipeline, cursor, min_new_samples=1)
    assert isinstance(waiting, dg.SkipReason) and waiting.skip_message.startswith(f"the JSONL of {days[0]} is not the file")


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


def test_on_an_s3_warehouse_the_sensor_fires_once_and_the_model_version_lands_in_the_store(
    s3_data_dir, tmp_path, instance, tiny_base
):
    pipeline = Pipeline(tmp_path, instance, data_dir=s3_data_dir)
    generate(pipeline, days=["2026-11-19"], events_per_day=150)
    pipeline.materialize("2026-11-19")
    request, cursor = evaluate(pipeline, None, min_new_samples=100)
    assert isinstance(request, dg.RunRequest)
    assert evaluate(pipeline, None, min_new_samples=100)[0].run_key == request.run_key  # the tick evaluated twice

    tags = {**request.tags, "dagster/run_key": request.run_key}
    assert pipeline.train(LoraTraining(base_model=str(tiny_base), **FAST), request.run_config, tags).success
    consumed, _ = evaluate(pipeline, cursor, min_new_samples=100)
    assert consumed.skip_message == "0 of 100 new samples in the 1 exportable day"

    prefix = s3_data_dir.removeprefix("s3://")
    stored = {key.removeprefix(f"{prefix}/") for key in objects(s3_data_dir)}
    [training] = {key.split("/")[1] for key in stored if key.startswith("training/")}
    for key in ("adapter/adapter_config.json", "adapter/adapter_model.safetensors", "tokenizer/tokenizer_config.json",
                "training_config.json", "metrics.json", "dataset.json"):  # fmt: skip
        assert f"models/v0001/{key}" in stored, key
    assert {"models/registry.json", "datasets/versions/v001/manifest.json"} <= stored
    assert {f"training/{training}/{name}" for name in ("manifest.json", "train.jsonl", "eval.jsonl")} <= stored
    assert not (tmp_path / "data").exists()  # nothing in a local folder named like the data

    registry = ModelRegistry(pipeline.resources()["warehouse"].models_dir())
    [version] = registry.versions()
    assert version["version"] == "v0001" and version["dataset_version"] == "v001"
    assert version["dataset_hash"] == request.tags[DATASET_TAG] and version["status"] == "candidate"
    # `current` is an object naming the version in use: the model commands work on the store.
    registry.promote("v0001", "by hand: test")
    assert registry.current() == "v0001" and "* v0001" in format_versions(registry)
    assert registry.rollback("rolled back by hand: test") == ("v0001", None) and registry.current() is None


def test_naive_completions_alone_make_the_sensor_skip_and_say_why(pipeline):
    generate(pipeline, days=["2026-11-19"], events_per_day=150)
    exported = pipeline.metadata(pipeline.materialize("2026-11-19"), "sft_jsonl")["dagster/row_count"]
    skipped, cursor = evaluate(pipeline, None, min_new_samples=100, train_on_naive_completions=False)
    assert isinstance(skipped, dg.SkipReason)
    assert skipped.skip_message.startswith(f"{exported} new samples, but no completion that can be right to train on: {exported} naive")
    assert "train_on_naive_completions" in skipped.skip_message and "corrections" in skipped.skip_message
    # A person's corrected answers are completions that can be right: the sensor trains on them.
    sample_id = orjson.loads(pipeline.jsonl("2026-11-19").read_bytes().splitlines()[0])["sample_id"]
    write_lines(pipeline.data / "corrections" / "reviewed.jsonl", [{"sample_id": sample_id, "completion": "The documents say 30 days."}])
    request, _ = evaluate(pipeline, cursor, min_new_samples=100, train_on_naive_completions=False)
    assert isinstance(request, dg.RunRequest)
    # Opting in to naive completions trains on them (explicitly).
    assert isinstance(evaluate(pipeline, None, min_new_samples=100)[0], dg.RunRequest)
