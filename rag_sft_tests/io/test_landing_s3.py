"""The landing folder as a prefix of an S3 server (SeaweedFS, started by the tests): the index
and the day's ranges behave as on a local folder, from the listing and ranged reads."""

import gzip
from datetime import date
from pathlib import Path

import orjson
import pytest
import zstandard

from rag_sft.io.sources.landing import LandingFolder
from rag_sft.io.storage import ranges
from rag_sft.io.storage.location import StorageUnavailable, location
from rag_sft_tests.helpers import event, write_lines
from rag_sft_tests.io.test_landing_index import reference_days
from rag_sft_tests.io.test_landing_scan import by_ranges, folder_with_every_case

D18, D19, D20 = date(2026, 11, 18), date(2026, 11, 19), date(2026, 11, 20)


def upload(local: Path, uri: str) -> None:
    """Every file under `local` to the same names under the prefix `uri`."""
    prefix = location(uri)
    for path in sorted(local.rglob("*")):
        if path.is_file():
            (prefix / path.relative_to(local).as_posix()).write_bytes(path.read_bytes())


@pytest.fixture
def reads(monkeypatch) -> list[tuple[str, int, int]]:
    """Every (object or file, start, end) the range scans read, in this process (one worker)."""
    seen: list[tuple[str, int, int]] = []
    original = ranges.range_view

    def recorded(path, start, end):
        seen.append((str(path), start, end))
        return original(path, start, end)

    monkeypatch.setattr(ranges, "range_view", recorded)
    return seen


def test_an_s3_prefix_places_and_judges_every_line_as_the_local_folder(s3_data_dir, tmp_path):
    local = folder_with_every_case(tmp_path / "landing")
    (tmp_path / "landing" / "logs-2026-11-18.jsonl.gz").write_bytes(
        gzip.compress(b"".join(orjson.dumps(event(f"g{i}", "2026-11-18T08:00:00Z")) + b"\n" for i in range(4)))
    )
    (tmp_path / "landing" / "z.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(orjson.dumps(event("z", "2026-11-20T01:00:00Z"))))
    (tmp_path / "landing" / ".shipping.jsonl").write_bytes(orjson.dumps(event("hidden", "2026-11-18T08:00:00Z")))
    write_lines(tmp_path / "landing" / ".partial" / "x.jsonl", [event("hidden2", "2026-11-18T08:00:00Z")])
    upload(tmp_path / "landing", f"{s3_data_dir}/landing")
    remote = LandingFolder(f"{s3_data_dir}/landing", tmp_path / "state" / "index.sqlite")

    assert [str(path.relative_to(remote.root)) for path in remote.files()] == [
        str(path.relative_to(local.root)) for path in local.files()
    ]
    assert remote.days_present() == local.days_present() == reference_days(local)
    assert reference_days(remote) == reference_days(local)
    for day in (D18, D19, D20):
        scratch = tmp_path / f"scratch-{day}"
        scratch.mkdir()
        assert by_ranges(remote, day, 2, 300, scratch) == by_ranges(local, day, 1, 300, scratch)


def test_a_day_reads_only_its_spans_of_the_objects_that_hold_it(s3_data_dir, tmp_path, reads):
    landing = tmp_path / "landing"
    write_lines(landing / "events-2026-11-18.jsonl", [event(f"a{i}", "2026-11-18T10:00:00Z") for i in range(50)])
    write_lines(landing / "events-2026-11-19.jsonl", [event(f"b{i}", "2026-11-19T10:00:00Z") for i in range(50)])
    write_lines(
        landing / "both.jsonl",
        [event(f"c{i}", "2026-11-18T23:00:00Z") for i in range(20)] + [event(f"d{i}", "2026-11-19T01:00:00Z") for i in range(30)],
    )
    upload(landing, f"{s3_data_dir}/landing")
    folder = LandingFolder(f"{s3_data_dir}/landing", tmp_path / "state" / "index.sqlite")
    folder.refresh_index()
    spans = dict(folder.index().spans_of(D19))
    reads.clear()

    scratch = tmp_path / "scratch"
    scratch.mkdir()
    counts, _ = by_ranges(folder, D19, 1, 1 << 20, scratch)
    assert counts.read == 80
    root = f"{s3_data_dir}/landing"
    assert sorted(reads) == sorted((f"{root}/{source}", span.start, span.end) for source, span in spans.items())
    assert spans["both.jsonl"].start > 0  # the other day's lines of the shared object are not read
    assert f"{root}/events-2026-11-18.jsonl" not in {path for path, _, _ in reads}


def test_a_rewritten_longer_object_is_read_from_where_the_index_stopped(s3_data_dir, tmp_path, reads):
    landing = tmp_path / "landing"
    first = [event(f"a{i}", "2026-11-18T10:00:00Z") for i in range(10)]
    write_lines(landing / "log.jsonl", first)
    upload(landing, f"{s3_data_dir}/landing")
    folder = LandingFolder(f"{s3_data_dir}/landing", tmp_path / "state" / "index.sqlite")
    assert folder.index().refresh() == {D18}
    indexed = folder.index().entries()["log.jsonl"].size
    assert folder.index().refresh() == set()  # the listing says nothing changed: nothing is read

    write_lines(landing / "log.jsonl", first + [event(f"b{i}", "2026-11-19T10:00:00Z") for i in range(5)])
    upload(landing, f"{s3_data_dir}/landing")
    reads.clear()
    assert folder.index().refresh() == {D19}
    assert [start for _, start, _ in reads] == [indexed]
    assert folder.days_present() == {D18: 10, D19: 5}


def test_a_missing_bucket_names_the_endpoint_and_the_bucket(s3_server, s3_data_dir, tmp_path):
    folder = LandingFolder("s3://no-such-bucket/landing", tmp_path / "index.sqlite")
    with pytest.raises(StorageUnavailable, match=rf"{s3_server.endpoint}.*'no-such-bucket'"):
        folder.days_present()


def test_a_stopped_server_names_the_endpoint_and_the_bucket(s3_data_dir, tmp_path, monkeypatch):
    stopped = "http://127.0.0.1:9"  # the discard port: nothing listens there
    monkeypatch.setenv("AWS_ENDPOINT_URL", stopped)
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    folder = LandingFolder(s3_data_dir, tmp_path / "index.sqlite")
    with pytest.raises(StorageUnavailable, match=rf"{stopped}.*bucket '{location(s3_data_dir).key.split('/')[0]}'"):
        folder.days_present()


def test_an_empty_prefix_has_no_events(s3_data_dir, tmp_path):
    folder = LandingFolder(f"{s3_data_dir}/landing", tmp_path / "index.sqlite")
    assert not folder.has_events() and folder.days_present() == {}
