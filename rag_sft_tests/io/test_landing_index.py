"""The landing index: which files hold which days, kept up to date without re-reading history."""

import os
from datetime import date

import orjson

from rag_sft.io.sources import landing_scan
from rag_sft.io.sources.landing import LandingFolder
from rag_sft_tests.helpers import event, write_lines
from rag_sft_tests.io.test_landing_scan import folder_with_every_case

D17, D18, D19, D20 = date(2026, 11, 17), date(2026, 11, 18), date(2026, 11, 19), date(2026, 11, 20)


def reference_days(folder: LandingFolder) -> dict:
    """Lines per day by the rule book, read line by line."""
    counts: dict = {}
    for path in folder.files():
        for line_day, _ in folder._dated_lines(path):
            counts[line_day] = counts.get(line_day, 0) + 1
    return counts


def test_the_index_places_every_line_as_the_rule_book_does(tmp_path):
    folder = folder_with_every_case(tmp_path / "landing")
    assert LandingFolder(folder.root).days_present() == reference_days(folder)
    assert len(reference_days(folder)) == 3 and sum(reference_days(folder).values()) > 100


def test_an_unchanged_folder_is_not_read_again(tmp_path):
    landing = tmp_path / "landing"
    write_lines(landing / "a.jsonl", [event(f"a{i}", "2026-11-18T10:00:00Z") for i in range(5)])
    folder = LandingFolder(landing, tmp_path / "index.sqlite")
    assert folder.index().refresh() == {D18}
    assert folder.index().refresh() == set()
    # a new process (a later run) finds the index on disk
    again = LandingFolder(landing, tmp_path / "index.sqlite")
    assert again.index().refresh() == set()
    assert again.days_present() == {D18: 5}


def test_a_late_file_changes_only_its_day(tmp_path):
    landing = tmp_path / "landing"
    write_lines(landing / "events-2026-11-18.jsonl", [event(f"a{i}", "2026-11-18T10:00:00Z") for i in range(3)])
    write_lines(landing / "events-2026-11-19.jsonl", [event(f"b{i}", "2026-11-19T10:00:00Z") for i in range(3)])
    folder = LandingFolder(landing, tmp_path / "index.sqlite")
    folder.index().refresh()
    before = {day: folder.index().fingerprint(day) for day in (D18, D19)}
    counter = folder.index().change_counter()

    write_lines(landing / "late" / "x.jsonl", [event("late", "2026-11-18T23:59:00Z")])
    assert folder.index().refresh() == {D18}
    assert folder.index().days_changed_after(counter) == {D18}
    assert folder.index().fingerprint(D18) != before[D18]
    assert folder.index().fingerprint(D19) == before[D19]
    assert folder.days_present() == {D18: 4, D19: 3}


def test_an_appended_file_is_read_from_where_the_index_stopped(tmp_path):
    landing = tmp_path / "landing"
    path = write_lines(
        landing / "log.jsonl", [event("a", "2026-11-18T10:00:00Z"), b"{broken", event("b", "2026-11-19T01:00:00Z")]
    )
    folder = LandingFolder(landing, tmp_path / "index.sqlite")
    folder.index().refresh()
    d18 = folder.index().fingerprint(D18)
    with path.open("ab") as handle:  # an undated line continues the last day, then a new day
        handle.write(b"not json\n" + orjson.dumps(event("c", "2026-11-20T01:00:00Z")) + b"\n")
    assert folder.index().refresh() == {D19, D20}
    assert folder.index().fingerprint(D18) == d18
    assert folder.days_present() == reference_days(folder) == {D18: 2, D19: 2, D20: 1}
    # the day's span starts at its first line and numbering continues through the file
    [(source, span)] = folder.index().spans_of(D19)
    assert (source, span.lines_before, span.lines) == ("log.jsonl", 2, 2)


def test_a_rewritten_or_removed_file_is_read_again(tmp_path):
    landing = tmp_path / "landing"
    path = write_lines(landing / "log.jsonl", [event("a", "2026-11-18T10:00:00Z"), event("b", "2026-11-19T10:00:00Z")])
    folder = LandingFolder(landing, tmp_path / "index.sqlite")
    folder.index().refresh()
    write_lines(path, [event("a", "2026-11-17T10:00:00Z")])  # shorter: not an append
    assert folder.index().refresh() == {D17, D18, D19}
    assert folder.days_present() == {D17: 1}
    counter = folder.index().change_counter()
    path.unlink()
    assert folder.index().refresh() == {D17}
    assert folder.index().days_changed_after(counter) == {D17}
    assert folder.days_present() == {}


def test_a_day_reads_the_same_lines_with_or_without_history(tmp_path):
    """The lines judged for a day are those of its spans, numbered as in the whole file."""
    landing = tmp_path / "landing"
    lines = [event(f"{day.day}-{i}", f"{day.isoformat()}T0{i}:00:00Z") for day in (D17, D18, D19) for i in range(3)]
    write_lines(landing / "all.jsonl", [*lines[:4], b"garbage", *lines[4:]])
    folder = LandingFolder(landing, tmp_path / "index.sqlite")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    from rag_sft.core import ingest

    counts = ingest.IngestCounts()
    batches = list(ingest.deduplicated(landing_scan.judged_chunks(folder, D18, 32768, 1, scratch), counts))
    accepted = [row for batch in batches if batch.accepted is not None for row in batch.accepted.to_pylist()]
    dead = [row for batch in batches if batch.dead_letter is not None for row in batch.dead_letter.to_pylist()]
    assert [(row["request_id"], row["source_line"]) for row in accepted] == [("18-0", 4), ("18-1", 6), ("18-2", 7)]
    assert [(row["reason"], row["source_line"]) for row in dead] == [("invalid_json", 5)]
    [(_, span)] = folder.index().spans_of(D18)
    assert span.lines_before == 3 and span.start == len(b"".join(orjson.dumps(line) + b"\n" for line in lines[:3]))


def test_a_file_name_that_is_not_utf8_is_read_and_escaped(tmp_path):
    landing = tmp_path / "landing"
    landing.mkdir()
    name = os.fsdecode(b"caf\xe9.jsonl")
    write_lines(landing / name, [event("a", "2026-11-18T10:00:00Z")])
    write_lines(landing / "good.jsonl", [event("b", "2026-11-18T11:00:00Z")])
    folder = LandingFolder(landing, tmp_path / "index.sqlite")
    assert folder.days_present() == {D18: 2}
    assert {source for source, _ in folder.index().spans_of(D18)} == {"caf\\xe9.jsonl", "good.jsonl"}
