"""What a dataset version is made of: names, counts, manifest and hash."""

import orjson

from rag_sft.core import versions
from rag_sft.core.training_data import dataset_hash


def test_version_names_count_up_from_v001():
    assert versions.next_version_name([]) == "v001"
    assert versions.next_version_name(["v001", "v002", "notes", ".v003.tmp-x"]) == "v003"
    assert versions.next_version_name(["v999"]) == "v1000"


def test_label_counts_of_a_jsonl_file():
    lines = b"".join(orjson.dumps({"label": label}) + b"\n" for label in ["a", "b", "a"])
    assert versions.label_counts(lines + b"\n") == (3, {"a": 2, "b": 1})


def test_the_manifest_lists_days_in_order_with_totals_and_the_hash_of_its_contents():
    entries = [
        versions.DayEntry("2026-11-19", "date=2026-11-19/records.jsonl", "b" * 64, 3, {"x": 2, "y": 1}, {"label_balance": "passed"}),
        versions.DayEntry("2026-11-18", "date=2026-11-18/records.jsonl", "a" * 64, 1, {"x": 1}, {}, {"alpaca.jsonl": "c" * 64}),
    ]
    manifest = versions.version_manifest("v002", entries, "2026-11-20T00:00:00+00:00")
    assert [day["day"] for day in manifest["days"]] == ["2026-11-18", "2026-11-19"]
    assert (manifest["version"], manifest["records"], manifest["labels"]) == ("v002", 4, {"x": 3, "y": 1})
    assert manifest["hash"] == dataset_hash({"2026-11-18": "a" * 64, "2026-11-19": "b" * 64})
    assert manifest["days"][0]["other_files"] == {"alpaca.jsonl": "c" * 64}
    assert manifest["days"][1]["checks"] == {"label_balance": "passed"}
    assert versions.version_hash({"2026-11-19": "b" * 64, "2026-11-18": "a" * 64}) == manifest["hash"]
