"""Line-aligned ranges and the memory-mapped line finder agree with splitting the bytes."""

import pytest

from rag_sft.io.storage.ranges import line_aligned_ranges, mapped_lines, mapped_raw_lines

CONTENT = b'{"a":1}\n\n  \n \t{"b":2}\r\n{"c":3}\r\r\n\x0b\n{"d":4} \n{"e":"\xe4\xb8\xad"}\n{"last":5}'


def reference(data: bytes):
    """Non-blank lines (trailing CRs removed) with 1-based numbers and byte offsets."""
    kept, offset = [], 0
    for number, line in enumerate(data.split(b"\n"), 1):
        stripped = line.rstrip(b"\r")
        if stripped.strip():
            kept.append((number, offset, stripped))
        offset += len(line) + 1
    return kept


@pytest.mark.parametrize("content", [CONTENT, CONTENT + b"\n", b"x", b"\n\n", b"only\r"])
@pytest.mark.parametrize("range_bytes", [1, 7, 1 << 20])
def test_mapped_lines_match_splitting(tmp_path, content, range_bytes):
    path = tmp_path / "f.jsonl"
    path.write_bytes(content)
    found = []
    for start, end in line_aligned_ranges(path, range_bytes):
        mapped = mapped_lines(path, start, end)
        raw = mapped_raw_lines(path, start, end)
        assert mapped.count == len(raw) == len(content[start:end].removesuffix(b"\n").split(b"\n"))
        assert [bytes(line) for line in raw] == content[start:end].removesuffix(b"\n").split(b"\n")
        found.append([(n, start + int(o), bytes(line)) for n, o, line in zip(mapped.numbers, mapped.offsets, mapped.lines)])
    # Number the lines file-wide as the landing scan does, range by range.
    numbered, before = [], 0
    for (start, end), lines in zip(line_aligned_ranges(path, range_bytes), found):
        numbered += [(n + before, offset, line) for n, offset, line in lines]
        before += mapped_lines(path, start, end).count
    assert numbered == reference(content)
