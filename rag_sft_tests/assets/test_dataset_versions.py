"""Dataset versions through Dagster: immutable, re-used for identical contents, named by training."""

import hashlib
import json

import dagster as dg
import pytest

from rag_sft.assets.versions import sft_dataset_version
from rag_sft.io.registry.dataset_versions import DatasetVersions, VersionConflict
from rag_sft.io.registry.model_registry import ModelRegistry
from rag_sft.resources import LoraTraining
from rag_sft_tests.assets.test_pipeline import generate

DAYS = ["2026-11-17", "2026-11-18", "2026-11-19"]


def version(pipeline, start="", end=""):
    result = dg.materialize(
        [sft_dataset_version],
        instance=pipeline.instance,
        resources={"warehouse": pipeline.resources()["warehouse"]},
        run_config={"ops": {"sft_dataset_version": {"config": {"start": start, "end": end}}}},
    )
    return {k: v.value for k, v in result.asset_materializations_for_node("sft_dataset_version")[0].metadata.items()}


def tree(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_versions_are_immutable_snapshots_named_once_per_content(pipeline):
    generate(pipeline, days=DAYS, events_per_day=150)
    for day in DAYS[:2]:
        pipeline.materialize(day)
    first = version(pipeline)
    assert (first["dataset_version"], first["created"], first["days"]) == ("v001", True, DAYS[:2])
    versions = DatasetVersions(pipeline.data / "datasets" / "versions")
    manifest = versions.manifest("v001")
    for entry in manifest["days"]:
        data = (pipeline.data / "datasets" / "versions" / "v001" / entry["file"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry["sha256"] == hashlib.sha256(pipeline.jsonl(entry["day"]).read_bytes()).hexdigest()
        assert entry["records"] == len(data.splitlines()) == sum(entry["labels"].values())
        assert entry["checks"] == {"confidence": "passed", "label_balance": "passed", "export_format": "passed"}
    assert manifest["records"] == first["records"]
    v001 = tree(pipeline.data / "datasets" / "versions" / "v001")

    # The same days with the same contents: the existing version.
    again = version(pipeline)
    assert (again["dataset_version"], again["created"], again["version_hash"]) == ("v001", False, first["version_hash"])

    # A new day makes v002; v001 stays as it was, byte for byte.
    pipeline.materialize(DAYS[2])
    second = version(pipeline)
    assert (second["dataset_version"], second["created"], second["days"]) == ("v002", True, DAYS)
    assert tree(pipeline.data / "datasets" / "versions" / "v001") == v001
    assert version(pipeline, end=DAYS[1])["dataset_version"] == "v001"  # a range picks its days

    # A re-materialized day with other contents (different rules) changes the day, not the versions.
    pipeline.materialize(DAYS[0], min_confidence=0.9)
    assert tree(pipeline.data / "datasets" / "versions" / "v001") == v001
    third = version(pipeline)
    assert third["dataset_version"] == "v003" and third["version_hash"] != second["version_hash"]
    assert versions.names() == ["v001", "v002", "v003"]


def test_a_version_refuses_a_day_that_changed_since_it_was_chosen(pipeline):
    generate(pipeline, days=DAYS[:1], events_per_day=100)
    pipeline.materialize(DAYS[0])
    versions = DatasetVersions(pipeline.data / "datasets" / "versions")
    warehouse = pipeline.resources()["warehouse"]
    with pytest.raises(VersionConflict, match="re-materialized"):
        versions.create({DAYS[0]: "0" * 64}, warehouse.export_dir)
    with pytest.raises(VersionConflict, match="missing"):
        versions.create({"2026-11-01": "0" * 64}, warehouse.export_dir)
    assert versions.names() == []
    assert not [p for p in versions.root.iterdir() if p.name.startswith(".")]  # no half-made version left


def test_training_records_the_dataset_version_and_the_registry_shows_it(pipeline, tiny_base):
    generate(pipeline, days=DAYS[:1], events_per_day=150)
    pipeline.materialize(DAYS[0])
    assert version(pipeline)["dataset_version"] == "v001"
    fast = LoraTraining(base_model=str(tiny_base), max_length=64, batch_size=16, train_on_naive_completions=True)  # naive fixtures
    result = pipeline.train(fast)  # the exportable days: the same contents as v001
    assert result.success
    dataset = pipeline.metadata(result, "training_dataset")
    assert (dataset["dataset_version"], dataset["dataset_version_created"]) == ("v001", False)
    assert pipeline.metadata(result, "lora_adapter")["dataset_version"] == "v001"
    [entry] = ModelRegistry(pipeline.data / "models").versions()
    assert entry["dataset_version"] == "v001"
    assert json.loads((pipeline.data / "models" / entry["version"] / "dataset.json").read_text())["dataset_version"] == "v001"

    by_name = pipeline.train(fast, run_config={"ops": {"training_dataset": {"config": {"version": "v001"}}}})
    assert by_name.success and pipeline.metadata(by_name, "training_dataset")["dataset_version"] == "v001"
    unknown = pipeline.train(fast, run_config={"ops": {"training_dataset": {"config": {"version": "v042"}}}})
    assert not unknown.success
