"""The daily pipeline reading its events from a landing prefix on an S3 server (SeaweedFS,
started by the tests): a day gives what the same files in a local folder give, byte for byte."""

import gzip

from rag_sft_tests.assets.test_pipeline import generate
from rag_sft_tests.conftest import Pipeline
from rag_sft_tests.io.test_landing_s3 import upload

DAYS = ["2026-11-17", "2026-11-18", "2026-11-19"]


def test_days_from_an_s3_landing_prefix_match_a_local_folder_byte_for_byte(s3_data_dir, tmp_path, instance):
    local = Pipeline(tmp_path / "local", instance)
    remote = Pipeline(tmp_path / "remote", instance, landing_dir=f"{s3_data_dir}/landing")
    generate(local, events_per_day=150, malformed_share=0.05, duplicate_share=0.05)
    shipped = local.landing / f"events-{DAYS[2]}.jsonl"  # a shipper's compressed log
    (local.landing / f"events-{DAYS[2]}.jsonl.gz").write_bytes(gzip.compress(shipped.read_bytes()))
    shipped.unlink()
    upload(local.landing, remote.landing_dir)

    for day in DAYS:
        from_s3, from_disk = remote.materialize(day), local.materialize(day)
        for asset in ("raw_events", "sft_records"):
            counts = {key: value for key, value in remote.metadata(from_s3, asset).items() if isinstance(value, int)}
            assert counts == {key: value for key, value in local.metadata(from_disk, asset).items() if isinstance(value, int)}
        assert remote.metadata(from_s3, "raw_events")["events_read"] == 150
        assert remote.jsonl(day).read_bytes() == local.jsonl(day).read_bytes()
