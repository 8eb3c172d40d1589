"""Erasure on request with the warehouse on an S3 server (SeaweedFS, started by the tests), seen
as a user and an analyst see it: three days with LLM-corrected answers (a local stub) and every
trainer export, a dataset version, a training dataset and a model trained on them, all objects
under the prefix; then the erase_requests job for 3 request ids (one also as a duplicate, one
also as an unreadable line). Afterwards no object and no local file holds their text, the
tables read back with pandas have lost exactly their rows, the version keeps its name under a
new hash with the erasure noted and its files matching its manifest, the counts reconcile with
`erased`, the model is flagged, and re-running the days (a late copy of one event included)
keeps them out. The same days and erasure on a local disk give the same files."""

from __future__ import annotations

import hashlib
import json

import dagster as dg
import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import s3fs

from rag_sft.core.exports import FORMATS, TRL_PROMPT_COMPLETION, file_name
from rag_sft.erasure_job import ERASE_OP, erase_requests_job
from rag_sft.io.erasure import EXPORT_FILES, erase_record_files
from rag_sft.io.registry.dataset_versions import DatasetVersions
from rag_sft.io.registry.model_registry import ModelRegistry
from rag_sft.io.storage.location import listed_files, location
from rag_sft.resources import Completions, LoraTraining, TrainerExports
from rag_sft.testing.openai_server import running_stub
from rag_sft_tests.assets.test_s3_warehouse import objects
from rag_sft_tests.cli.test_erasure import TABLES, files_holding, secret
from rag_sft_tests.cli.test_erasure import landing_days as write_landing_days
from rag_sft_tests.conftest import Pipeline
from rag_sft_tests.sensors.test_training_sensor import FAST

DAYS = ["2026-11-17", "2026-11-18", "2026-11-19"]
ERASED = {"req-erase-a": DAYS[0], "req-erase-b": DAYS[1], "req-erase-c": DAYS[2]}
TEXTS = [secret(kind, n) for n in range(3) for kind in "QA"]
KEY = "test-key"


def landing_days(pipeline: Pipeline) -> None:
    """Three days of events; the erased requests' events carry their own question and answer text
    (a search for it finds them and nothing else), the first twice (a duplicate), the second also
    as a damaged line whose request_id cannot be read (as in the local erasure test)."""
    write_landing_days(pipeline.landing, ERASED, DAYS)


def objects_holding(uri: str, needles: list[str]) -> dict[str, list[str]]:
    """Every object under the prefix holding one of `needles`: its bytes, and for Parquet its rows read back."""
    found = {}
    for key, data in objects(uri).items():
        if key.endswith(".parquet"):
            data += orjson.dumps(pq.read_table(pa.BufferReader(data)).to_pylist(), default=str)
        hits = [needle for needle in needles if needle.encode() in data]
        if hits:
            found[key] = hits
    return found


def table(s3_server, uri: str, name: str) -> pd.DataFrame:
    """A table of the warehouse as an analyst reads it from the store (every day)."""
    s3fs.S3FileSystem.clear_instance_cache()  # s3fs caches listings and ETags: the days were rewritten
    return pd.read_parquet(f"{uri}/warehouse/{name}", storage_options=s3_server.storage_options())


def erase(pipeline: Pipeline, completions: Completions, exports: TrainerExports) -> dg.ExecuteInProcessResult:
    return erase_requests_job.execute_in_process(
        run_config={"ops": {ERASE_OP: {"config": {"request_ids": list(ERASED)}}}},
        resources=pipeline.resources(completions=completions, trainer_exports=exports),
        instance=pipeline.instance,
    )


def reconciled_erased_counts(instance: dg.DagsterInstance) -> dict[str, int]:
    """Each day's latest raw_events materialization: read = accepted + duplicates + rejected + erased; the erased."""
    erased = {}
    for day in DAYS:
        latest = instance.fetch_materializations(
            dg.AssetRecordsFilter(dg.AssetKey("raw_events"), asset_partitions=[day]), limit=1
        ).records[0]
        counts = {key: value.value for key, value in latest.asset_materialization.metadata.items()}
        assert counts["events_read"] == counts["accepted"] + counts["duplicates"] + counts["rejected"] + counts["erased"]
        erased[day] = counts["erased"]
    return erased


def days_without_checks(manifest: dict) -> list[dict]:
    """A version's days but their check outcomes (a version made by hand here has none)."""
    return [{**day, "checks": {}} for day in manifest["days"]]


@pytest.fixture
def llm(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    with running_stub() as stub:
        yield Completions(strategy="llm", base_url=stub.base_url, model="teacher", api_key=dg.EnvVar("OPENAI_API_KEY"))


def test_erasure_on_an_s3_warehouse_reaches_every_object_and_matches_a_local_disk(
    s3_server, s3_data_dir, tmp_path, instance, tiny_base, llm
):
    exports = TrainerExports(formats=list(FORMATS))
    remote = Pipeline(tmp_path / "s3", instance, data_dir=s3_data_dir)
    landing_days(remote)
    days = {}
    for day in DAYS:
        days[day] = remote.metadata(remote.materialize(day, completions=llm, trainer_exports=exports), "sft_jsonl")["sha256"]
    trained = remote.train(
        LoraTraining(base_model=str(tiny_base), **FAST), {"ops": {"training_dataset": {"config": {"days": days}}}},
        trainer_exports=exports,
    )  # fmt: skip
    assert trained.success
    warehouse = remote.resources()["warehouse"]
    versions = DatasetVersions(warehouse.versions_dir())
    registry = ModelRegistry(warehouse.models_dir())
    [model] = registry.versions()
    [training] = [folder.name for folder in warehouse.training_dir().iterdir()]
    state = tmp_path / "s3" / "state"
    assert any((state / "downloads").rglob("train.jsonl"))  # the training run's download of its dataset

    before = objects_holding(s3_data_dir, TEXTS)
    held = {key.split("/")[2] for key in before}  # bucket/prefix/<folder>/...
    assert held == {"warehouse", "datasets", "training"}
    assert any("/datasets/versions/v001/" in key for key in before) and any(key.endswith(".parquet") for key in before)
    assert files_holding(TEXTS, state)  # the answer cache and the download hold them too
    ids = [json.dumps(request_id) for request_id in ERASED]  # as JSON strings: req-1 is not in req-10
    assert {key.split("/")[2] for key in objects_holding(s3_data_dir, ids)} == {"warehouse", "datasets", "training"}
    rows_before = {name: len(table(s3_server, s3_data_dir, name)) for name in TABLES}
    v001_before = versions.manifest("v001")
    training_before = json.loads((warehouse.training_dir() / training / "manifest.json").read_bytes())
    splits_before = sum(len((warehouse.training_dir() / training / f"{s}.jsonl").read_bytes().splitlines()) for s in ("train", "eval"))

    result = erase(remote, llm, exports)
    assert result.success
    report = result.output_for_node(ERASE_OP)

    # Nothing of theirs in any object (Parquet read back), nor in the local state folder (the
    # answer cache, the spool, the training dataset's download).
    assert objects_holding(s3_data_dir, TEXTS) == {}
    assert objects_holding(s3_data_dir, ids) == {}
    assert files_holding(TEXTS, state) == {}
    for name in TABLES:
        frame = table(s3_server, s3_data_dir, name)
        assert not frame["request_id"].isin(list(ERASED)).any()
        if "raw_text" in frame:
            assert not frame["raw_text"].fillna("").str.contains("req-erase-").any()
    rows_after = {name: len(table(s3_server, s3_data_dir, name)) for name in TABLES}
    # a: 2 events (+1 duplicate row), b: 1 event (+1 unreadable copy), c: 1 event
    assert {name: rows_before[name] - rows_after[name] for name in TABLES} == {
        "raw_events": 3, "rejected_events": 2, "annotated_samples": 3, "sft_records": 3,
    }  # fmt: skip
    assert sorted(report["days"]) == DAYS
    assert report["cache_entries_removed"] == 3

    # The version keeps its name; its manifest, replaced after its files, has the new hash and
    # the erasure, and its files are those it lists.
    v001 = versions.manifest("v001")
    assert versions.names() == ["v001"]
    assert v001["records"] == v001_before["records"] - 3 and v001["hash"] != v001_before["hash"]
    [note] = v001["erasures"]
    assert (note["previous_hash"], note["records_removed"], note["erasure_run"]) == (v001_before["hash"], 3, result.run_id)
    assert report["dataset_versions_rewritten"] == {"v001": {"records_removed": 3, "previous_hash": v001_before["hash"], "hash": v001["hash"]}}
    uploaded = listed_files(versions.root / "v001")  # the manifest no older than any file (the store's clock: seconds)
    assert max(version.mtime_ns for version in uploaded.values()) == uploaded[versions.root / "v001" / "manifest.json"].mtime_ns
    for entry in v001["days"]:
        folder = versions.root / "v001" / f"date={entry['day']}"
        assert hashlib.sha256((folder / "records.jsonl").read_bytes()).hexdigest() == entry["sha256"]
        assert {name: hashlib.sha256((folder / name).read_bytes()).hexdigest() for name in entry["other_files"]} == entry["other_files"]
        assert sorted(path.name for path in folder.iterdir()) == sorted(["records.jsonl", *entry["other_files"]])
    # The training dataset: 3 records fewer over its splits, its manifest noting it; the model flagged.
    training_after = json.loads((warehouse.training_dir() / training / "manifest.json").read_bytes())
    splits_after = sum(len((warehouse.training_dir() / training / f"{s}.jsonl").read_bytes().splitlines()) for s in ("train", "eval"))
    assert splits_before - splits_after == 3 == training_after["erasures"][0]["records_removed"]
    assert {key: value for key, value in training_after.items() if key != "erasures"} == training_before
    assert report["training_datasets_rewritten"] == {training: 3}
    flagged = registry.get(model["version"])
    assert (flagged["trained_on_erased"], flagged["erased_records"], flagged["status"]) == (True, 3, model["status"])
    assert report["models_trained_on_erased"] == {model["version"]: 3}
    spooled = [path for path in (state / "spool").rglob("*") if path.is_file() and path.suffix != ".lock"]
    assert not spooled  # every upload cleaned up (the locks of versions and registry stay)
    # Each rewritten day reported with its counts lowered and `erased` raised (raw_events: its row
    # of each id; the duplicate and the unreadable copy were rejected_events' rows): they reconcile.
    reported = reconciled_erased_counts(instance)
    assert reported == {day: 1 for day in DAYS}

    # The same days and erasure on a local disk: the same exports and the same version.
    with dg.instance_for_test() as local_instance:
        local = Pipeline(tmp_path / "disk", local_instance)
        landing_days(local)
        for day in DAYS:
            local.materialize(day, completions=llm, trainer_exports=exports)
        local_warehouse = local.resources()["warehouse"]
        local_versions = DatasetVersions(local_warehouse.versions_dir())
        local_versions.create(days, local_warehouse.export_dir)
        assert local_versions.manifest("v001")["hash"] == v001_before["hash"]
        assert erase(local, llm, exports).success
        assert reconciled_erased_counts(local_instance) == reported
    assert days_without_checks(local_versions.manifest("v001")) == days_without_checks(v001)
    for day in DAYS:
        for path in local_warehouse.export_dir(day).iterdir():
            assert (warehouse.export_dir(day) / path.name).read_bytes() == path.read_bytes(), path

    # A late copy of an erased event, then every day again: they stay out, counts reconcile.
    late = next(line for line in (remote.landing / f"events-{DAYS[2]}.jsonl").read_bytes().splitlines() if b"req-erase-c" in line)
    (remote.landing / "late.jsonl").write_bytes(late + b"\n")
    for day in DAYS:
        remote.materialize(day, completions=llm, trainer_exports=exports)
    assert objects_holding(s3_data_dir, TEXTS) == {}
    assert {name: len(table(s3_server, s3_data_dir, name)) for name in TABLES} == rows_after
    assert reconciled_erased_counts(instance) == {DAYS[0]: 2, DAYS[1]: 2, DAYS[2]: 2}
    assert not (tmp_path / "s3" / "data").exists()  # nothing written to a local data folder


def test_an_erasure_stopped_between_two_objects_of_a_version_is_finished_by_the_next(s3_data_dir, tmp_path):
    """The store went away after a day's trainer export was replaced and before its records file:
    the next erasure finds the records again, leaves the export already without them as it is,
    and the manifest, replaced last, lists the files as they are."""
    root = location(s3_data_dir, spool=tmp_path / "spool")
    export = root / "datasets" / "sft" / "date=2026-11-19"
    lines = [orjson.dumps({"request_id": f"req-{n}", "label": "factuality_error"}) + b"\n" for n in range(3)]
    follower = [orjson.dumps({"prompt": f"p{n}", "completion": f"c{n}"}) + b"\n" for n in range(3)]
    (export / "records.jsonl").write_bytes(b"".join(lines))
    (export / file_name(TRL_PROMPT_COMPLETION)).write_bytes(b"".join(follower))
    versions = DatasetVersions(root / "datasets" / "versions")
    versions.create({"2026-11-19": hashlib.sha256(b"".join(lines)).hexdigest()}, lambda day: export)
    day = versions.root / "v001" / "date=2026-11-19"
    (day / file_name(TRL_PROMPT_COMPLETION)).write_bytes(follower[0] + follower[2])  # the stopped erasure's one upload

    manifest = versions.erase(
        "v001", lambda folder, into: erase_record_files(folder, EXPORT_FILES, {"req-1"}, into), {"erasure_run": "r"}
    )
    assert manifest["records"] == 2 and manifest["erasures"][0]["records_removed"] == 1
    assert (day / "records.jsonl").read_bytes() == lines[0] + lines[2]
    assert (day / file_name(TRL_PROMPT_COMPLETION)).read_bytes() == follower[0] + follower[2]
    [entry] = manifest["days"]
    assert entry["sha256"] == hashlib.sha256(lines[0] + lines[2]).hexdigest()
    assert entry["other_files"] == {file_name(TRL_PROMPT_COMPLETION): hashlib.sha256(follower[0] + follower[2]).hexdigest()}
