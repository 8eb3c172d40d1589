"""The landing index proves what it read: rewritten files, edits under an append, events whose
day becomes valid later, rotated and unusually named files (issue: nothing exported is ever lost)."""

import gzip
import os
from datetime import date

import orjson
import pyarrow.parquet as pq

from rag_sft.io.sources import landing_scan
from rag_sft.io.sources.landing import LandingFolder
from rag_sft_tests.helpers import event, write_lines

D18, D19, D20, D21 = date(2026, 11, 18), date(2026, 11, 19), date(2026, 11, 20), date(2026, 11, 21)


def fixed_length_lines(prefix: str, stamp: str, count: int) -> list[bytes]:
    return [orjson.dumps(event(f"{prefix}{i:03d}", stamp)) for i in range(count)]


def read_day(folder: LandingFolder, day: date, tmp_path) -> int:
    """Events of the day as a run reads them (lines judged, accepted and dead-letter)."""
    scratch = tmp_path / f"scratch-{day}"
    scratch.mkdir(exist_ok=True)
    return sum(chunk.read for chunk in landing_scan.judged_chunks(folder, day, 10_000, 1, scratch))


def test_a_file_rewritten_with_its_size_and_mtime_restored_is_read_as_it_is_now(tmp_path):
    """What `rsync -a`, `cp -p` or a tar restore do: the stat is the same, the bytes are not."""
    landing = tmp_path / "landing"
    first, second = fixed_length_lines("a", "2026-11-18T10:00:00Z", 20), fixed_length_lines("b", "2026-11-19T10:00:00Z", 20)
    assert len({len(line) for line in first + second}) == 1
    path = write_lines(landing / "events.jsonl", first + second)
    folder = LandingFolder(landing, tmp_path / "index.sqlite")
    assert (read_day(folder, D18, tmp_path), read_day(folder, D19, tmp_path)) == (20, 20)

    stat = path.stat()
    write_lines(path, second + first)  # the halves swapped: same size
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert (path.stat().st_size, path.stat().st_mtime_ns) == (stat.st_size, stat.st_mtime_ns)

    again = LandingFolder(landing, tmp_path / "index.sqlite")  # a later run
    assert (read_day(again, D18, tmp_path), read_day(again, D19, tmp_path)) == (20, 20)
    assert again.days_present() == {D18: 20, D19: 20}


def test_an_early_line_edited_then_lines_appended_is_not_taken_for_an_append(tmp_path):
    landing = tmp_path / "landing"
    lines = fixed_length_lines("a", "2026-11-18T10:00:00Z", 40)
    assert sum(len(line) + 1 for line in lines[1:]) > 4096  # the edit lies before the last 4 KB
    path = write_lines(landing / "log.jsonl", lines)
    folder = LandingFolder(landing, tmp_path / "index.sqlite")
    folder.index().refresh()
    before = folder.index().fingerprint(D18)

    edited = [lines[0].replace(b"\xe4\xb8\x89", b"\xe4\xba\x94")] + lines[1:]  # 三 -> 五: same length
    assert edited[0] != lines[0] and len(edited[0]) == len(lines[0])
    write_lines(path, edited + [orjson.dumps(event("z", "2026-11-19T10:00:00Z"))])
    assert folder.index().refresh() == {D18, D19}
    assert folder.index().fingerprint(D18) != before


def test_an_event_stamped_ahead_of_time_counts_on_its_day_once_that_day_is_valid(tmp_path):
    """Valid days end tomorrow: an event two days ahead is placed with its neighbours (and
    rejected there) until its day may have events; then it belongs to its own day."""
    landing = tmp_path / "landing"
    write_lines(
        landing / "log.jsonl",
        [event("a", "2026-11-19T10:00:00Z"), event("ahead", "2026-11-21T10:00:00Z"), event("b", "2026-11-19T11:00:00Z")],
    )
    today = LandingFolder(landing, tmp_path / "index.sqlite", valid_days=(D18, D20))
    assert today.days_present() == {D19: 3}
    tomorrow = LandingFolder(landing, tmp_path / "index.sqlite", valid_days=(D18, D21))  # the file is unchanged
    assert tomorrow.days_present() == {D19: 2, D21: 1}
    assert read_day(tomorrow, D19, tmp_path) == 2 and read_day(tomorrow, D21, tmp_path) == 1


def test_rotated_and_differently_named_json_lines_are_read_and_other_files_are_named(tmp_path):
    landing = tmp_path / "landing"
    write_lines(landing / "a.jsonl", [event("a", "2026-11-19T10:00:00Z")])
    write_lines(landing / "EVENTS.JSONL", [event("upper", "2026-11-19T10:00:00Z")])
    write_lines(landing / "b.ndjson", [event("nd", "2026-11-19T10:00:00Z")])
    write_lines(landing / "events.jsonl.1", [event("rotated", "2026-11-19T10:00:00Z")])
    with gzip.open(landing / "events.jsonl.2.gz", "wb") as handle:
        handle.write(orjson.dumps(event("rotated-gz", "2026-11-19T10:00:00Z")) + b"\n")
    write_lines(landing / "c.json", [event("json", "2026-11-19T10:00:00Z")])
    (landing / "notes.txt").write_text("not events")
    folder = LandingFolder(landing, tmp_path / "index.sqlite")
    assert folder.days_present() == {D19: 5}
    assert folder.ignored_files() == ["c.json", "notes.txt"]


def test_a_rotated_log_loses_nothing_and_a_deleted_one_is_a_loss_until_accepted(tmp_path):
    landing = tmp_path / "landing"
    write_lines(landing / "events.jsonl", [event(f"a{i}", "2026-11-18T10:00:00Z") for i in range(30)])
    folder = LandingFolder(landing, tmp_path / "index.sqlite")
    assert folder.days_present() == {D18: 30}

    (landing / "events.jsonl").rename(landing / "events.jsonl.1")  # logrotate
    write_lines(landing / "events.jsonl", [event("b", "2026-11-19T10:00:00Z")])
    assert folder.days_present() == {D18: 30, D19: 1}
    assert folder.loss(D18) is None

    (landing / "events.jsonl.1").unlink()  # rotated away for good
    loss = folder.loss(D18)
    assert (loss.lines_before, loss.lines_now, loss.sources) == (30, 0, ("events.jsonl.1",))
    assert "events.jsonl.1" in loss.describe()
    fingerprint = folder.fingerprint(D18)
    assert folder.accept_loss(D18) == loss
    assert folder.loss(D18) is None and folder.fingerprint(D18) != fingerprint


def test_a_file_that_lost_lines_is_a_loss_and_restoring_it_clears_it(tmp_path):
    landing = tmp_path / "landing"
    lines = [event(f"a{i}", "2026-11-18T10:00:00Z") for i in range(10)]
    path = write_lines(landing / "events.jsonl", lines)
    folder = LandingFolder(landing, tmp_path / "index.sqlite")
    folder.refresh_index()
    write_lines(path, lines[:4])
    assert folder.loss(D18).lines_now == 4
    write_lines(path, lines)
    assert folder.loss(D18) is None


def test_a_line_moved_to_another_day_is_no_loss(tmp_path):
    landing = tmp_path / "landing"
    lines = [event(f"a{i}", "2026-11-18T10:00:00Z") for i in range(3)]
    path = write_lines(landing / "events.jsonl", lines)
    folder = LandingFolder(landing, tmp_path / "index.sqlite")
    folder.refresh_index()
    write_lines(path, lines[:2] + [event("a2", "2026-11-19T10:00:00Z")])  # its timestamp corrected
    assert folder.days_present() == {D18: 2, D19: 1}
    assert folder.loss(D18) is None


def test_a_day_from_thousands_of_small_files_is_written_in_few_row_groups(pipeline):
    for i in range(2000):
        write_lines(pipeline.landing / f"part-{i:05d}.jsonl", [event(f"r{i}", "2026-11-19T10:00:00Z")])
    result = pipeline.materialize("2026-11-19", selection=["raw_events", "rejected_events"])
    assert pipeline.metadata(result, "raw_events")["accepted"] == 2000
    raw = pq.ParquetFile(pipeline.metadata(result, "raw_events")["path"])
    assert raw.metadata.num_rows == 2000 and raw.metadata.num_row_groups == 1


