"""The shared-truth stores, each on SQLite and on a real PostgreSQL server alike: the cross-day
indexes (a day sees only the days before it, a re-run replaces its own rows, the outcome does
not depend on the order days are materialized in), the erasure ledger, the training sensor's
ledger, and days written from several processes at once."""

import subprocess
import sys
import threading
import time
import uuid

import dagster as dg
import numpy as np
import pyarrow as pa
import pytest

from rag_sft.core import near_duplicates as nd
from rag_sft.core.trigger import ExportLedger
from rag_sft.io.llm.completion_cache import PostgresCompletionCache
from rag_sft.io.state.erasure_ledger import ErasureLedger
from rag_sft.io.state.near_duplicate_index import NearDuplicateIndex
from rag_sft.io.state.request_index import RequestIndex
from rag_sft.io.state.state_db import PostgresStateDb, SqliteStateDb, StateUnavailable, open_state_db
from rag_sft.io.state.training_ledger import TrainingLedger, jsonl_sample_ids
from rag_sft.resources import Warehouse

BANDING = nd.Banding.for_threshold(0.8)
DAYS = {  # the same question retyped on three days, and one other question
    "2026-11-17": ["Nginx upstream 超时时间在哪里配置?"],
    "2026-11-18": ["Nginx upstream 超时时间在哪里配置？", "Redis Cluster 和 Sentinel 模式怎么选？"],
    "2026-11-19": ["nginx upstream 超时时间在哪里配置?"],
}


@pytest.fixture(params=["sqlite", "postgresql"])
def state_db(request, tmp_path):
    """Opens the state database `name`: a SQLite file, or a database on the tests' PostgreSQL server."""
    urls: dict[str, str] = {}

    def open_db(name: str):
        if request.param == "sqlite":
            return SqliteStateDb(tmp_path / f"{name}.sqlite")
        if name not in urls:
            server = request.getfixturevalue("postgres")
            urls[name] = server.url(server.create_database(f"{name}_{uuid.uuid4().hex[:8]}"))
        return PostgresStateDb(urls[name])

    open_db.urls = urls
    return open_db


def materialize(index: NearDuplicateIndex, day: str) -> dict[str, str]:
    """What sft_records does for a day: dedup against earlier days, remember what it kept."""
    questions = DAYS[day]
    ids = [f"{day}-{n}_factuality_error" for n in range(len(questions))]
    signature = nd.signatures(nd.question_keys(pa.array(questions)).to_pylist())
    found = nd.deduplicate_day(ids, signature, lambda keys: index.earlier(day, keys), BANDING, 0.8)
    kept = found.kept
    index.replace_day(day, [ids[i] for i in kept], found.signatures[kept], found.keys[kept])
    return dict(zip(found.set_aside.column("sample_id").to_pylist(), found.set_aside.column("duplicate_of").to_pylist()))


def test_first_seen_is_the_earliest_day_whatever_order_days_run_in(state_db):
    with NearDuplicateIndex(state_db("in_order")) as index:
        in_order = {day: materialize(index, day) for day in sorted(DAYS)}
    assert in_order == {
        "2026-11-17": {},
        "2026-11-18": {"2026-11-18-0_factuality_error": "2026-11-17-0_factuality_error"},
        "2026-11-19": {"2026-11-19-0_factuality_error": "2026-11-17-0_factuality_error"},
    }
    with NearDuplicateIndex(state_db("backwards")) as index:
        for day in sorted(DAYS, reverse=True):  # a backfill that ran the latest day first
            materialize(index, day)
        # Each day run again afterwards (as the change sensor or a re-execution does) ends as in order.
        again = {day: materialize(index, day) for day in sorted(DAYS)}
    assert again == in_order


def test_a_rerun_of_a_day_does_not_meet_its_own_signatures(state_db):
    with NearDuplicateIndex(state_db("index")) as index:
        first = materialize(index, "2026-11-18")
        assert materialize(index, "2026-11-18") == first == {}
        keys = nd.band_keys(nd.signatures(nd.question_keys(pa.array(DAYS["2026-11-18"])).to_pylist()), BANDING)
        assert index.earlier("2026-11-18", keys).sample_ids == []
        assert set(index.earlier("2026-11-19", keys).sample_ids) == {"2026-11-18-0_factuality_error", "2026-11-18-1_factuality_error"}


def test_a_request_belongs_to_the_earliest_day_that_accepted_it(state_db):
    with RequestIndex(state_db("requests")) as index:
        index.replace_day("2026-11-19", ["r1", "r2"])
        index.replace_day("2026-11-18", ["r2", "r3"])  # an earlier day materialized afterwards
        assert index.first_days("2026-11-19", ["r1", "r2", "r3", "r4"]) == {"r2": "2026-11-18", "r3": "2026-11-18"}
        assert index.first_days("2026-11-18", ["r2", "r3"]) == {}  # a re-run does not meet itself
        index.replace_day("2026-11-18", ["r3"])  # its re-run no longer holds r2
        assert index.first_days("2026-11-20", ["r2"]) == {"r2": "2026-11-19"}


def test_the_band_keys_of_replaced_days_are_never_seen_and_are_swept(state_db):
    with NearDuplicateIndex(state_db("index")) as index:
        for _ in range(3):  # the same day materialized three times
            materialize(index, "2026-11-17")
        keys = nd.band_keys(nd.signatures(nd.question_keys(pa.array(DAYS["2026-11-17"])).to_pylist()), BANDING)
        found = index.earlier("2026-11-18", keys)
        assert set(found.sample_ids) == {"2026-11-17-0_factuality_error"} and len(found.keys) == BANDING.bands
    db = state_db("index")
    rows = db.execute("SELECT COUNT(*) FROM band_keys").fetchone()[0]
    db.close()
    assert rows <= 2 * BANDING.bands  # at most one replaced run's keys wait for the sweep


ODD_IDS = ["plain", 'quote"d', "comma,separated", "new\nline", "tab\there", "back\\slash", "中文-请求", "", "NULL", "\\N"]


def test_ids_of_any_shape_travel_unchanged(state_db):
    with RequestIndex(state_db("requests")) as index:
        index.replace_day("2026-11-18", ODD_IDS)
        assert index.first_days("2026-11-19", [*ODD_IDS, "absent"]) == dict.fromkeys(ODD_IDS, "2026-11-18")
        assert index.first_days("2026-11-19", []) == {}  # an empty list too
    with ErasureLedger(state_db("ledger")) as ledger:
        assert ledger.record(ODD_IDS, "run-1") == ODD_IDS
        assert ledger.request_ids() == sorted(ODD_IDS)


def test_an_erased_request_keeps_its_first_erasure(state_db):
    with ErasureLedger(state_db("ledger")) as ledger:
        assert ledger.request_ids() == []
        assert ledger.record(["r2", "r1", "r2"], "run-1") == ["r2", "r1"]
        assert ledger.record(["r1", "r3"], "run-2") == ["r3"]
    with ErasureLedger(state_db("ledger")) as ledger:  # another connection (another host) sees them
        assert ledger.request_ids() == ["r1", "r2", "r3"]
        rows = ledger._db.execute("SELECT request_id, erasure_run FROM erased ORDER BY request_id").fetchall()
    assert [tuple(row) for row in rows] == [("r1", "run-1"), ("r2", "run-1"), ("r3", "run-2")]


WRITER = """
import sys
import numpy as np
import pyarrow as pa
from rag_sft.io.state.near_duplicate_index import NearDuplicateIndex
from rag_sft.io.state.state_db import open_state_db
from pathlib import Path

url, path, first_day = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
for day in range(first_day, first_day + 6, 2):  # this writer's days, interleaved with the other's
    name = f"2026-11-{day:02d}"
    with NearDuplicateIndex(open_state_db(url, path)) as index:
        rng = np.random.default_rng(day)
        index.replace_day(name, [f"{name}-{n}" for n in range(300)], rng.integers(0, 2**32, (300, 8), dtype=np.uint32),
                          np.tile(np.arange(4, dtype=np.int64) + 10 * day, (300, 1)))  # one band key per band and day
"""


def test_days_written_from_two_processes_at_once_never_share_a_sample_id(state_db, tmp_path):
    state_db("shared").close()  # creates the database
    url = state_db.urls.get("shared", "")
    writers = [
        subprocess.Popen([sys.executable, "-c", WRITER, url, str(tmp_path / "shared.sqlite"), str(first)], stderr=subprocess.PIPE)
        for first in (1, 2)
    ]
    assert [writer.wait(timeout=120) for writer in writers] == [0, 0], [w.stderr.read().decode()[-2000:] for w in writers]
    with NearDuplicateIndex(state_db("shared")) as index:
        for day in range(1, 7):  # every day's samples are found under their own keys
            found = index.earlier("2026-11-30", np.arange(4, dtype=np.int64) + 10 * day)
            assert sorted(set(found.sample_ids)) == sorted(f"2026-11-{day:02d}-{n}" for n in range(300))
        ids, distinct = index._db.execute("SELECT COUNT(*), COUNT(DISTINCT id) FROM kept").fetchone()
    assert ids == distinct == 6 * 300


def test_the_state_database_url_is_a_secret_and_chooses_the_stores_home(postgres, monkeypatch, tmp_path):
    url = postgres.url(postgres.create_database(f"state_{uuid.uuid4().hex[:8]}"))
    monkeypatch.setenv("RAG_SFT_STATE_URL", url)
    warehouse = Warehouse(data_dir=str(tmp_path / "data"))
    assert isinstance(warehouse.state_url, dg.EnvVar)  # stored with a run as the variable's name only
    with warehouse.open_state(ErasureLedger) as ledger:
        ledger.record(["r1"], "run-1")
        assert postgres.password not in repr(ledger._db) and "***" in repr(ledger._db)
    assert not (tmp_path / "data" / "state" / ErasureLedger.FILE).exists()  # nothing local
    with warehouse.completion_cache() as cache:  # no cache_url: the LLM answers go to the same database
        assert isinstance(cache, PostgresCompletionCache)
    db = open_state_db(url, tmp_path / "unused.sqlite")
    assert db.execute("SELECT request_id FROM erased").fetchall() == [("r1",)]
    db.close()
    with pytest.raises(ValueError, match=r"postgresql\+psycopg2://") as refused:
        open_state_db(url.replace("postgresql+psycopg2", "mysql"), tmp_path / "unused.sqlite")
    assert postgres.password not in str(refused.value)


def test_the_training_ledger_counts_untrained_samples_and_outlives_its_connection(state_db, tmp_path):
    day1, day2 = tmp_path / "day1.jsonl", tmp_path / "day2.jsonl"
    day1.write_bytes(b'{"sample_id": "s1"}\n{"sample_id": "s2"}\n')
    day2.write_bytes(b'{"sample_id": "s2"}\n{"sample_id": "s3"}\n{"sample_id": "s4"}\n')
    files = {"2026-11-18": day1, "2026-11-19": day2}
    ledger = ExportLedger()
    for storage_id, (day, path) in enumerate(files.items(), start=1):
        ledger.saw_records(storage_id, day, exported=True)
        ledger.saw_jsonl(storage_id + 10, day, jsonl_sample_ids(path)[1], len(path.read_bytes().splitlines()), True)
    with TrainingLedger(state_db("ledger")) as store, store.transaction():
        store.save(ledger)
        assert store.refresh_samples(ledger.exportable(), files.__getitem__) == []
        assert store.untrained_by_day() == {"2026-11-18": 2, "2026-11-19": 3}
        store.mark_trained(["s1", "s2"])  # a training run on day 1's samples
    with TrainingLedger(state_db("ledger")) as store:  # the daemon restarted, on another machine
        assert store.untrained_by_day() == {"2026-11-19": 2}
        assert store.export_ledger({"sft_jsonl": 12, "sft_records": 2}) == ledger
    with pytest.raises(RuntimeError), TrainingLedger(state_db("ledger")) as store, store.transaction():
        store.mark_trained(["s3", "s4"])
        raise RuntimeError("a tick that fails half-way")  # changes nothing
    with TrainingLedger(state_db("ledger")) as store:
        assert store.untrained_by_day() == {"2026-11-19": 2}


def test_a_day_written_while_another_is_half_written_gets_other_sample_ids(state_db):
    """The first writer is held inside its transaction, its ids reserved and its rows not yet in:
    the second waits for it, then takes the next ids."""
    state_db("overlap").close()  # the database exists before the writers start
    reserved, release = threading.Event(), threading.Event()
    keys = lambda day: np.tile(np.arange(4, dtype=np.int64) + 10 * day, (50, 1))  # noqa: E731

    def write(day: int, held: bool) -> None:
        with NearDuplicateIndex(state_db("overlap")) as index:  # a connection of its own, in its thread
            if held:
                insert = index._db.insert

                def held_insert(table, rows, **options):
                    if table == "kept":
                        reserved.set()
                        release.wait(30)
                    return insert(table, rows, **options)

                index._db.insert = held_insert
            index.replace_day(f"2026-11-{day:02d}", [f"{day}-{n}" for n in range(50)], np.zeros((50, 8), dtype=np.uint32), keys(day))

    first = threading.Thread(target=write, args=(1, True))
    first.start()
    assert reserved.wait(30)
    second = threading.Thread(target=write, args=(2, False))
    second.start()
    time.sleep(1.5)
    assert second.is_alive()  # waiting for the first writer's transaction
    release.set()
    first.join(60), second.join(60)
    with NearDuplicateIndex(state_db("overlap")) as index:
        ids = dict(index._db.execute("SELECT sample_id, id FROM kept").fetchall())
        assert len(ids) == 100 and len(set(ids.values())) == 100
        assert set(index.earlier("2026-11-30", keys(1)[0]).sample_ids) == {f"1-{n}" for n in range(50)}
        assert set(index.earlier("2026-11-30", keys(2)[0]).sample_ids) == {f"2-{n}" for n in range(50)}


def test_an_erased_sample_leaves_no_row_and_no_band_key(state_db):
    with NearDuplicateIndex(state_db("index")) as index:
        for day in ("2026-11-17", "2026-11-18"):
            materialize(index, day)
        keys = nd.band_keys(nd.signatures(nd.question_keys(pa.array(DAYS["2026-11-18"])).to_pylist()), BANDING)
        assert index.erase({"2026-11-18": ["2026-11-18-1_factuality_error", "absent"]}) == 1
        assert index.earlier("2026-11-19", keys[1:]).sample_ids == []
        (left,) = index._db.execute("SELECT COUNT(*) FROM band_keys b JOIN kept k ON k.id = b.kept").fetchone()
        (every,) = index._db.execute("SELECT COUNT(*) FROM band_keys").fetchone()
        assert left == every == BANDING.bands  # 2026-11-17-0's (2026-11-18-0 was set aside as its near-duplicate)
    with RequestIndex(state_db("requests")) as requests:
        requests.replace_day("2026-11-18", ["r1", "r2"])
        assert requests.erase(["r1", "r9"]) == 1
        assert requests.first_days("2026-11-19", ["r1", "r2"]) == {"r2": "2026-11-18"}


def test_a_distributed_executor_without_a_state_database_is_refused(monkeypatch, tmp_path):
    monkeypatch.setenv("RAG_SFT_EXECUTOR", "celery")
    monkeypatch.delenv("RAG_SFT_STATE_URL", raising=False)
    with pytest.raises(StateUnavailable, match="RAG_SFT_STATE_URL=postgresql"):
        Warehouse(data_dir=str(tmp_path / "data")).open_state(RequestIndex)
    with Warehouse(data_dir=str(tmp_path / "data"), state_url="local").open_state(RequestIndex) as index:
        index.replace_day("2026-11-18", ["r1"])  # workers sharing one machine: said explicitly
    assert (tmp_path / "data" / "state" / RequestIndex.FILE).exists()


def test_a_day_is_written_by_one_machine_at_a_time(postgres, tmp_path):
    url = postgres.url(postgres.create_database(f"locks_{uuid.uuid4().hex[:8]}"))
    host_a = Warehouse(data_dir=str(tmp_path / "data"), local_state_dir=str(tmp_path / "a"), state_url=url)
    host_b = Warehouse(data_dir=str(tmp_path / "data"), local_state_dir=str(tmp_path / "b"), state_url=url)
    entered = []

    def write(warehouse, day):
        with warehouse.day_lock(day, None):
            entered.append(day)

    with host_a.day_lock("2026-11-18", None):
        same_day, other_day = (threading.Thread(target=write, args=(host_b, day)) for day in ("2026-11-18", "2026-11-19"))
        same_day.start(), other_day.start()
        other_day.join(30)
        time.sleep(1)
        assert entered == ["2026-11-19"] and same_day.is_alive()  # host B waits for host A's run of the day
    same_day.join(30)
    assert entered == ["2026-11-19", "2026-11-18"]


def test_each_store_records_its_own_birth_and_a_store_from_before_births_describes_everything(state_db):
    """A new store is born when it is created (a lost one comes back young), each store of one
    database on its own; a store that held rows before births were recorded (an upgraded
    deployment) has described the data all along, as has one rebuilt."""
    old = state_db("old")  # an upgraded deployment's store: its table and rows, no birth
    old.execute("CREATE TABLE request_days (request_id TEXT NOT NULL, day TEXT NOT NULL, PRIMARY KEY (request_id, day))")
    old.execute("INSERT INTO request_days VALUES ('r1', '2026-11-17')")
    old.close()
    with RequestIndex(state_db("old")) as upgraded:
        assert upgraded.describes_since() == 0.0

    before = time.time()
    with RequestIndex(state_db("state")) as requests, ErasureLedger(state_db("state")) as ledger:
        born = requests.describes_since()
        assert before <= born <= time.time() and before <= ledger.describes_since()
        time.sleep(0.05)
        with NearDuplicateIndex(state_db("state")) as later:
            assert later.describes_since() > born  # its own birth, though the database was there
        requests.set_describes_since(0.0)
        assert (requests.describes_since(), ledger.describes_since() > 0) == (0.0, True)
    with RequestIndex(state_db("state")) as reopened:
        assert reopened.describes_since() == 0.0
