"""What counts as a landing file: compressed logs, folders behind symbolic links, shippers' files
being written."""

import gzip
import os
from datetime import date

import orjson
import pandas as pd
import zstandard

from rag_sft.io.sources.landing import LandingFolder
from rag_sft_tests.helpers import event

D18, D19 = date(2026, 11, 18), date(2026, 11, 19)


def jsonl(*events) -> bytes:
    return b"".join(orjson.dumps(value) + b"\n" for value in events)


def test_compressed_landing_files_are_read_like_plain_ones(tmp_path, pipeline):
    landing = pipeline.landing
    (landing / "events-2026-11-19.jsonl.gz").write_bytes(gzip.compress(jsonl(*(event(f"g{i}") for i in range(3)))))
    (landing / "more.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(jsonl(event("z1"), event("z2"))))
    (landing / "plain.jsonl").write_bytes(jsonl(event("p1")))
    folder = LandingFolder(landing)
    assert folder.has_events() and folder.days_present() == {D19: 6}

    result = pipeline.materialize("2026-11-19")
    assert pipeline.metadata(result, "raw_events")["accepted"] == 6
    raw = pd.read_parquet(pipeline.data / "warehouse" / "raw_events")
    assert sorted(set(raw["source"])) == ["events-2026-11-19.jsonl.gz", "more.jsonl.zst", "plain.jsonl"]
    assert list(raw.loc[raw["source"] == "events-2026-11-19.jsonl.gz", "source_line"]) == [1, 2, 3]


def test_a_damaged_compressed_file_keeps_what_it_can_and_says_why(pipeline):
    whole = gzip.compress(jsonl(*(event(f"g{i}") for i in range(200))))
    (pipeline.landing / "events-2026-11-19.jsonl.gz").write_bytes(whole[: len(whole) // 2])  # cut in transit
    result = pipeline.materialize("2026-11-19")  # one label only: exported all the same
    raw = pipeline.metadata(result, "raw_events")
    # the event cut in half and the line saying why the rest is missing
    assert raw["rejected"] == 2 and raw["accepted"] > 50
    assert raw["events_read"] == raw["accepted"] + raw["duplicates"] + raw["rejected"]
    dead = pd.read_parquet(pipeline.data / "warehouse" / "rejected_events")
    assert dead["reason"].tolist() == ["invalid_json", "invalid_json"]
    assert "could not be decompressed" in dead["raw_text"].iloc[1]


def test_a_rewritten_compressed_file_is_read_again_and_its_old_copy_removed(tmp_path):
    landing = tmp_path / "landing"
    landing.mkdir()
    path = landing / "log.jsonl.gz"
    path.write_bytes(gzip.compress(jsonl(event("a", "2026-11-18T10:00:00Z"))))
    folder = LandingFolder(landing, tmp_path / "state" / "index.sqlite")
    assert folder.days_present() == {D18: 1}
    path.write_bytes(gzip.compress(jsonl(event("a", "2026-11-18T10:00:00Z"), event("b", "2026-11-19T10:00:00Z"))))
    os.utime(path, ns=(1, 2_000_000_000_000_000_000))
    assert folder.days_present() == {D18: 1, D19: 1}
    assert len(list((tmp_path / "state" / "decompressed").iterdir())) == 1


def test_folders_behind_symbolic_links_are_read_once_and_a_link_loop_ends(tmp_path):
    landing, elsewhere = tmp_path / "landing", tmp_path / "elsewhere"
    (landing / "real").mkdir(parents=True)
    elsewhere.mkdir()
    (elsewhere / "linked.jsonl").write_bytes(jsonl(event("l1"), event("l2")))
    (landing / "real" / "own.jsonl").write_bytes(jsonl(event("o1")))
    (landing / "shipped").symlink_to(elsewhere, target_is_directory=True)
    (landing / "real" / "loop").symlink_to(landing, target_is_directory=True)  # a loop back to the top
    (landing / ".events.jsonl").write_bytes(jsonl(event("being-written")))  # a shipper's temporary file
    folder = LandingFolder(landing)
    assert [str(path.relative_to(landing)) for path in folder.files()] == ["real/own.jsonl", "shipped/linked.jsonl"]
    assert folder.days_present() == {D19: 3}


def test_events_dated_outside_the_partitions_are_rejected_on_their_neighbours_day(pipeline):
    from rag_sft_tests.helpers import write_lines

    write_lines(pipeline.landing / "log.jsonl", [
        event("ancient", "0001-01-01T00:00:00Z"),  # before any dated line: the first dated line's day
        event("a", "2026-11-18T10:00:00Z"),
        event("far", "9999-12-31T23:59:59Z"),  # after an 11-18 line: 11-18
        event("b", "2026-11-19T10:00:00Z"),
        event("old", "2020-05-01T00:00:00+08:00"),  # before the partitions' start (2025-01-01): 11-19
        b"not json",
        event("c", "2026-11-19T11:00:00Z"),
    ])  # fmt: skip
    read = 0
    for day, (accepted, out_of_range) in {"2026-11-18": (["a"], ["ancient", "far"]), "2026-11-19": (["b", "c"], ["old"])}.items():
        result = pipeline.materialize(day)
        raw = pipeline.metadata(result, "raw_events")
        assert raw["events_read"] == raw["accepted"] + raw["duplicates"] + raw["rejected"]
        read += raw["events_read"]
        accepted_ids = pd.read_parquet(pipeline.data / "warehouse" / "raw_events" / f"date={day}")["request_id"].tolist()
        dead = pd.read_parquet(pipeline.data / "warehouse" / "rejected_events" / f"date={day}")
        assert accepted_ids == accepted
        assert dead.loc[dead["reason"] == "timestamp_out_of_range", "raw_text"].str.extract(r'"request_id":"(\w+)"')[0].tolist() == out_of_range
    assert read == 7  # every line of the file counted on exactly one day
