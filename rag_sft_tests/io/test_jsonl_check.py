"""The format check over a file in ranges equals one pass over its lines, line numbers included."""

import pytest

from rag_sft.core import checks
from rag_sft.io.storage.jsonl_check import check_jsonl_file
from rag_sft_tests.core.test_checks import record


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("range_bytes", [100, 700, 1 << 20])
def test_ranges_on_workers_report_what_one_pass_reports(tmp_path, workers, range_bytes):
    lines = [record(request_id=f"r{n}") for n in range(30)]
    lines[3] = b"{broken"
    lines[17] = record(date="2026-11-20")
    lines[29] = record(prompt="")
    path = tmp_path / "records.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")

    report = check_jsonl_file(path, "2026-11-19", workers, range_bytes)
    expected = checks.check_jsonl_lines(lines, "2026-11-19")
    assert (report.lines, report.problems, report.examples) == (expected.lines, expected.problems, expected.examples)
    assert [line for line, _ in report.examples] == [4, 18, 30]


def test_an_empty_file_has_no_lines_and_passes(tmp_path):
    path = tmp_path / "records.jsonl"
    path.write_bytes(b"")
    report = check_jsonl_file(path, "2026-11-19", 2)
    assert report.lines == 0 and checks.export_format_verdict(report, checks.ERROR).passed
