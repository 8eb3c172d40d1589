"""The LLM answer cache on PostgreSQL (RAG_SFT_CACHE_URL), on a real server: the SQLite cache's
behaviour, writers in two processes at once, a day of corrections and its erasure, and a URL
whose password is never shown."""

from __future__ import annotations

import subprocess
import sys
import uuid

import dagster as dg
import pytest
import sqlalchemy as sa

from rag_sft.core.llm import Answer
from rag_sft.erasure_job import ERASE_OP, erase_requests_job
from rag_sft.io.llm.completion_cache import CompletionCache, PostgresCompletionCache, open_completion_cache
from rag_sft.resources import Completions, Warehouse
from rag_sft.testing.openai_server import running_stub
from rag_sft.testing.postgres_server import free_port
from rag_sft_tests.helpers import event, write_lines

DAY = "2026-11-19"
KEY = "sk-test-cache-0c41"


@pytest.fixture
def cache_url(postgres) -> str:
    return postgres.url(postgres.create_database(f"cache_{uuid.uuid4().hex[:8]}"))


@pytest.fixture(params=["sqlite", "postgresql"])
def cache(request, tmp_path):
    opened = (
        CompletionCache(tmp_path / "cache.sqlite")
        if request.param == "sqlite"
        else PostgresCompletionCache(request.getfixturevalue("cache_url"))
    )
    yield opened
    opened.close()


def test_both_caches_keep_replace_look_up_and_erase_answers_alike(cache):
    cache.put("k1", Answer("first", "teacher", 10, 5))
    cache.put("k1", Answer("replaced", "teacher", 11, 6))
    cache.put("k2", Answer("same text", "teacher", 1, 1))
    cache.put("k3", Answer("same text", "judge", 2, 2))  # the same answer under other settings
    cache.put("k4", Answer("kept", "teacher", 3, 3))
    assert cache.get_many(["k1", "k2", "missing", "k1"]) == {
        "k1": Answer("replaced", "teacher", 11, 6),
        "k2": Answer("same text", "teacher", 1, 1),
    }
    assert len(cache) == 4
    many = [f"bulk{n}" for n in range(1200)]  # more than one lookup chunk
    for key in many:
        cache.put(key, Answer(key, "teacher", 1, 1))
    assert len(cache.get_many(many)) == 1200

    assert cache.erase(["k1"], ["same text"]) == 3
    assert cache.get_many(["k1", "k2", "k3", "k4"]) == {"k4": Answer("kept", "teacher", 3, 3)}
    assert len(cache) == 1201


WRITER = """
import sys
from rag_sft.core.llm import Answer
from rag_sft.io.llm.completion_cache import open_completion_cache
url, first, last = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
cache = open_completion_cache(url, "unused")
for n in range(first, last):
    cache.put(f"key{n:05d}", Answer(f"answer {n}", "teacher", n, 1))
cache.close()
"""


def test_two_processes_create_the_table_and_write_at_once_without_losing_an_answer(cache_url):
    # Both start on an empty database: both create the table, then their keys overlap by 200.
    writers = [
        subprocess.Popen([sys.executable, "-c", WRITER, cache_url, str(first), str(last)], stderr=subprocess.PIPE)
        for first, last in ((0, 600), (400, 1000))
    ]
    for writer in writers:
        assert writer.wait(timeout=120) == 0, writer.stderr.read().decode()[-2000:]
    cache = open_completion_cache(cache_url, "unused")
    try:
        assert len(cache) == 1000
        found = cache.get_many(f"key{n:05d}" for n in range(1000))
        assert all(found[f"key{n:05d}"] == Answer(f"answer {n}", "teacher", n, 1) for n in range(1000))
    finally:
        cache.close()


def test_the_cache_url_is_a_secret_shown_only_without_its_password(cache_url, monkeypatch, postgres):
    monkeypatch.setenv("RAG_SFT_CACHE_URL", cache_url)
    warehouse = Warehouse(data_dir="/unused")
    assert isinstance(warehouse.cache_url, dg.EnvVar)  # stored with a run as the variable's name only
    assert postgres.password not in repr(warehouse)
    with warehouse.completion_cache() as cache:
        assert isinstance(cache, PostgresCompletionCache)
        assert postgres.password not in repr(cache) and "***" in repr(cache)
    with pytest.raises(ValueError, match="must be postgresql") as refused:
        open_completion_cache(cache_url.replace("postgresql+psycopg2", "mysql"), "/unused")
    assert postgres.password not in str(refused.value)
    closed_port = cache_url.replace(f":{postgres.port}/", f":{free_port()}/")
    with pytest.raises(sa.exc.OperationalError, match="Connection refused") as unreachable:
        open_completion_cache(closed_port, "/unused")
    assert postgres.password not in str(unreachable.value)


def test_a_day_of_llm_corrections_caches_in_postgresql_and_erasure_removes_its_answers(
    pipeline, cache_url, monkeypatch
):
    monkeypatch.setenv("RAG_SFT_CACHE_URL", cache_url)
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    events = [
        event(f"r{n:03d}", question=f"问题{n}:退款需要多久?", score=0.9,
              docs=[{"id": f"kb-{n}", "content": f"第{n}份文档。", "score": 0.9}])
        for n in range(12)
    ]  # fmt: skip
    write_lines(pipeline.landing / f"events-{DAY}.jsonl", events)
    with running_stub() as stub:
        completions = Completions(
            strategy="llm", base_url=stub.base_url, model="teacher", api_key=dg.EnvVar("OPENAI_API_KEY")
        )
        first = pipeline.metadata(pipeline.materialize(DAY, completions=completions), "sft_records")
        again = pipeline.metadata(pipeline.materialize(DAY, completions=completions), "sft_records")
        erased = erase_requests_job.execute_in_process(
            run_config={"ops": {ERASE_OP: {"config": {"request_ids": ["r000", "r001"]}}}},
            resources=pipeline.resources(completions=completions),
            instance=pipeline.instance,
        )
    assert (first["llm_distinct_requests"], first["llm_cache_hits"]) == (12, 0)
    assert (again["llm_cache_hits"], again["llm_requests"]) == (12, 0)  # answered from PostgreSQL
    assert not (pipeline.data / "cache").exists()  # nothing went to the SQLite default
    assert erased.success
    assert erased.output_for_node(ERASE_OP)["cache_entries_removed"] == 2
    cache = open_completion_cache(cache_url, "unused")
    try:
        assert len(cache) == 10
    finally:
        cache.close()
