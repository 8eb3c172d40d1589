"""The cross-day index of kept samples: a day sees only the days before it, a re-run replaces
its own rows, and the outcome does not depend on the order days are materialized in."""

from rag_sft.core import near_duplicates as nd
from rag_sft.io.near_duplicate_index import NearDuplicateIndex

BANDING = nd.Banding.for_threshold(0.8)
DOCS = ["kb-1", "kb-2", "kb-3"]
DAYS = {  # the same question retyped on three days, and one other question
    "2026-11-17": ["Nginx upstream 超时时间在哪里配置?"],
    "2026-11-18": ["Nginx upstream 超时时间在哪里配置？", "Redis Cluster 和 Sentinel 模式怎么选？"],
    "2026-11-19": ["nginx upstream 超时时间在哪里配置?"],
}


def materialize(index: NearDuplicateIndex, day: str) -> dict[str, str]:
    """What sft_records does for a day: dedup against earlier days, remember what it kept."""
    questions = DAYS[day]
    ids = [f"{day}-{n}_factuality_error" for n in range(len(questions))]
    found = nd.deduplicate_day(ids, nd.signatures(questions, [DOCS] * len(questions)), lambda keys: index.earlier(day, keys), BANDING, 0.8)
    kept = found.kept
    index.replace_day(day, [ids[i] for i in kept], found.signatures[kept], found.keys[kept])
    return dict(zip(found.set_aside.column("sample_id").to_pylist(), found.set_aside.column("duplicate_of").to_pylist()))


def test_first_seen_is_the_earliest_day_whatever_order_days_run_in(tmp_path):
    with NearDuplicateIndex(tmp_path / "in-order.sqlite") as index:
        in_order = {day: materialize(index, day) for day in sorted(DAYS)}
    assert in_order == {
        "2026-11-17": {},
        "2026-11-18": {"2026-11-18-0_factuality_error": "2026-11-17-0_factuality_error"},
        "2026-11-19": {"2026-11-19-0_factuality_error": "2026-11-17-0_factuality_error"},
    }
    with NearDuplicateIndex(tmp_path / "backwards.sqlite") as index:
        for day in sorted(DAYS, reverse=True):  # a backfill that ran the latest day first
            materialize(index, day)
        # Each day run again afterwards (as the change sensor or a re-execution does) ends as in order.
        again = {day: materialize(index, day) for day in sorted(DAYS)}
    assert again == in_order


def test_a_rerun_of_a_day_does_not_meet_its_own_signatures(tmp_path):
    with NearDuplicateIndex(tmp_path / "index.sqlite") as index:
        first = materialize(index, "2026-11-18")
        assert materialize(index, "2026-11-18") == first == {}
        keys = nd.band_keys(nd.signatures(DAYS["2026-11-18"], [DOCS, DOCS]), BANDING)
        assert index.earlier("2026-11-18", keys).sample_ids == []
        assert set(index.earlier("2026-11-19", keys).sample_ids) == {"2026-11-18-0_factuality_error", "2026-11-18-1_factuality_error"}


def test_a_request_belongs_to_the_earliest_day_that_accepted_it(tmp_path):
    from rag_sft.io.request_index import RequestIndex

    with RequestIndex(tmp_path / "requests.sqlite") as index:
        index.replace_day("2026-11-19", ["r1", "r2"])
        index.replace_day("2026-11-18", ["r2", "r3"])  # an earlier day materialized afterwards
        assert index.first_days("2026-11-19", ["r1", "r2", "r3", "r4"]) == {"r2": "2026-11-18", "r3": "2026-11-18"}
        assert index.first_days("2026-11-18", ["r2", "r3"]) == {}  # a re-run does not meet itself
        index.replace_day("2026-11-18", ["r3"])  # its re-run no longer holds r2
        assert index.first_days("2026-11-20", ["r2"]) == {"r2": "2026-11-19"}


def test_the_band_keys_of_replaced_days_are_never_seen_and_are_swept(tmp_path):
    import sqlite3

    with NearDuplicateIndex(tmp_path / "index.sqlite") as index:
        for _ in range(3):  # the same day materialized three times
            materialize(index, "2026-11-17")
        keys = nd.band_keys(nd.signatures(DAYS["2026-11-17"], [DOCS]), BANDING)
        found = index.earlier("2026-11-18", keys)
        assert set(found.sample_ids) == {"2026-11-17-0_factuality_error"} and len(found.keys) == BANDING.bands
    with sqlite3.connect(tmp_path / "index.sqlite") as db:
        rows = db.execute("SELECT COUNT(*) FROM band_keys").fetchone()[0]
    assert rows <= 2 * BANDING.bands  # at most one replaced run's keys wait for the sweep
