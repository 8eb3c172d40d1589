"""A day through the pipeline with corrected answers from a local OpenAI-compatible server."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time

import dagster as dg
import orjson
import pandas as pd
import pytest
from dagster._serdes import serialize_value

from rag_sft.resources import Completions
from rag_sft.testing.openai_server import running_stub
from rag_sft_tests.helpers import event, write_lines

DAY = "2026-11-19"
KEY = "sk-test-pipeline-3b1d0e77"
LABELS = [["factuality_error"], ["incomplete_answer"], ["low_relevance"], ["overconfidence"]]


def write_day(pipeline, questions: list[str], low_confidence: int = 0) -> None:
    events = [  # each answered from its own documents: different samples, not near-duplicates
        event(f"r{n:04d}", question=question, score=0.9, labels=LABELS[n % len(LABELS)],
              docs=[{"id": f"kb-{n:04d}-{d}", "content": f"第{n}份文档第{d}段。", "score": 0.9 - d / 10} for d in range(2)])
        for n, question in enumerate(questions)
    ]
    events += [event(f"low{n}", question=f"低分问题{n}?", score=0.2) for n in range(low_confidence)]
    write_lines(pipeline.landing / f"events-{DAY}.jsonl", events)


def llm_completions(stub) -> Completions:
    return Completions(
        strategy="llm",
        base_url=stub.base_url,
        model="teacher",
        api_key=dg.EnvVar("OPENAI_API_KEY"),
        backoff_base_s=0.01,
        max_retries=2,
    )


def records_of(pipeline) -> pd.DataFrame:
    return pd.read_parquet(pipeline.data / "warehouse" / "sft_records" / f"date={DAY}")


def test_an_llm_day_exports_corrected_answers_retries_failures_next_time_and_reuses_the_cache(
    pipeline, monkeypatch
):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    questions = [f"问题{n}:退款需要多久?" for n in range(22)] + ["Q-refuse 可以退款吗?", "Q-flaky 运费谁出?"]
    write_day(pipeline, questions, low_confidence=2)
    faults = {"Q-refuse": ["refusal"], "Q-flaky": ["rate_limit:0.01"]}
    with running_stub(faults=faults) as stub:
        first = pipeline.materialize(DAY, completions=llm_completions(stub))
        records = pipeline.metadata(first, "sft_records")
        export = pipeline.metadata(first, "sft_jsonl")
        assert records["accepted"] == 26 == records["exported"] + records["filtered"]
        assert records["exported"] == 23 and records["completion_failed"] == 1
        reasons = {row.data["reason"]: row.data["count"] for row in records["filter_reasons"].records}
        assert reasons == {"low_confidence": 2, "completion_refused": 1}
        assert records["completion_strategy"] == "llm" and records["llm_model"] == "teacher"
        assert (records["llm_samples"], records["llm_distinct_requests"], records["llm_cache_hits"]) == (24, 24, 0)
        assert records["llm_requests"] == 25  # 24 questions, one 429 retried
        assert {row.data["reason"]: row.data["count"] for row in records["llm_retries"].records} == {"rate_limited": 1}
        assert {row.data["reason"]: row.data["count"] for row in records["llm_failures"].records} == {"refused": 1}
        assert records["llm_prompt_tokens"] > 0 and records["llm_completion_tokens"] > 0
        assert records["llm_latency_s_p50"] > 0

        lines = [orjson.loads(line) for line in pipeline.jsonl(DAY).read_bytes().splitlines()]
        assert len(lines) == 23 == export["dagster/row_count"]
        assert all(line["completion_strategy"] == "llm" and line["completion_model"] == "teacher" for line in lines)
        # The stub answers with the opening of the first document: a correction, not the answer
        assert all(line["completion"] and line["completion"] in line["prompt"] for line in lines)
        assert "Q-refuse 可以退款吗?" not in {line["question"] for line in lines}
        table = records_of(pipeline).set_index("question")
        refused = table.loc["Q-refuse 可以退款吗?"]
        assert (refused.status, refused.filter_reason) == ("filtered", "completion_refused")
        assert pd.isna(refused.completion) and pd.isna(refused.completion_model)

        pairs = [orjson.loads(line) for line in pipeline.jsonl(DAY).with_name("preferences.jsonl").read_bytes().splitlines()]
        assert export["preference_pairs"] == len(pairs) == 23
        by_sample = {line["sample_id"]: line for line in lines}
        for pair in pairs:
            assert list(pair)[:3] == ["prompt", "chosen", "rejected"]
            record = by_sample[pair["sample_id"]]
            assert (pair["prompt"], pair["chosen"]) == (record["prompt"], record["completion"])
            assert pair["rejected"] == "三天内一定到账。" and pair["date"] == DAY

        # Re-materializing asks only for what has no answer yet: the refused sample, answered now.
        second = pipeline.materialize(DAY, completions=llm_completions(stub))
        again = pipeline.metadata(second, "sft_records")
        assert (again["llm_requests"], again["llm_cache_hits"], again["exported"]) == (1, 23, 24)
        assert again["completion_failed"] == 0
        published = pipeline.jsonl(DAY).read_bytes()

        third = pipeline.materialize(DAY, completions=llm_completions(stub))
        assert pipeline.metadata(third, "sft_records")["llm_requests"] == 0
        assert pipeline.jsonl(DAY).read_bytes() == published
        assert {request.authorization for request in stub.state.served} == {f"Bearer {KEY}"}

    # The key was sent, and is nowhere in the instance (events, logs, run config) or the data folder.
    for run in pipeline.instance.get_runs():
        assert KEY not in serialize_value(run)
        for record in pipeline.instance.all_logs(run.run_id):
            assert KEY not in serialize_value(record)
    for path in pipeline.data.rglob("*"):
        if path.is_file():
            assert KEY.encode() not in path.read_bytes(), path

    # Back to the naive strategy: the day is replaced whole, the LLM's pairs go with it.
    naive = pipeline.materialize(DAY)
    assert pipeline.metadata(naive, "sft_jsonl")["preference_pairs"] == 0
    assert not pipeline.jsonl(DAY).with_name("preferences.jsonl").exists()
    assert set(records_of(pipeline).completion_strategy.dropna()) == {"naive"}


def test_the_llm_strategy_without_a_key_fails_the_run_saying_what_to_set(pipeline, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    write_day(pipeline, ["退款需要多久?"])
    completions = Completions(strategy="llm", base_url="http://127.0.0.1:9/v1", model="teacher")
    result = pipeline.materialize(DAY, raise_on_error=False, completions=completions)
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert "OPENAI_API_KEY" in failure.event_specific_data.error.message
    assert not pipeline.jsonl(DAY).exists()


def _answered(stub) -> int:
    return sum(stub.state.answered().values())


def test_a_run_killed_half_way_resumes_without_paying_twice(pipeline, tmp_path):
    """`dagster asset materialize` killed mid-day; the next materialization asks only the rest."""
    questions = [f"问题{n}:运费谁出?" for n in range(240)]
    write_day(pipeline, questions)
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    command = [
        sys.executable, "-m", "dagster", "asset", "materialize", "-m", "rag_sft.definitions",
        "--select", "raw_events,rejected_events,annotated_samples,sft_records,sft_jsonl", "--partition", DAY,
    ]  # fmt: skip
    with running_stub(latency_s=0.25) as stub:
        env = {
            **os.environ,
            "DAGSTER_HOME": str(home),
            "RAG_SFT_DATA_DIR": str(pipeline.data),
            "RAG_SFT_LANDING_DIR": str(pipeline.landing),
            "RAG_SFT_COMPLETION_STRATEGY": "llm",
            "OPENAI_BASE_URL": stub.base_url,
            "OPENAI_API_KEY": KEY,
            "RAG_SFT_LLM_MODEL": "teacher",
            "RAG_SFT_TRIAGE": "false",  # every accepted sample asks for a correction (240)
        }
        run = subprocess.Popen(command, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 180
        while _answered(stub) < 80 and run.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert run.poll() is None, f"the run ended before it could be killed: {run.stderr.read().decode()[-2000:]}"
        os.killpg(run.pid, signal.SIGKILL)
        run.wait()
        time.sleep(0.5)  # answers to requests in flight at the kill arrive at nobody
        paid_before = _answered(stub)
        with sqlite3.connect(pipeline.data / "cache" / "completions.sqlite") as cache:
            kept = cache.execute("SELECT COUNT(*) FROM completions").fetchone()[0]
        assert paid_before - 16 <= kept <= paid_before < 240
        assert not pipeline.jsonl(DAY).exists()

        resumed = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        paid_after = _answered(stub) - paid_before
    assert paid_after == 240 - kept  # only what the cache did not hold
    assert max(stub.state.answered().values()) <= 2  # no request paid for more than twice...
    assert sum(stub.state.answered().values()) - 240 == paid_before - kept  # ...and only those lost in flight
    lines = pipeline.jsonl(DAY).read_bytes().splitlines()
    assert len(lines) == 240
    assert all(orjson.loads(line)["completion_strategy"] == "llm" for line in lines)


@pytest.mark.parametrize("strategy", ["naive", "llm"])
def test_the_default_resources_follow_the_environment(monkeypatch, strategy):
    from rag_sft.resources import Completions

    monkeypatch.setenv("RAG_SFT_COMPLETION_STRATEGY", strategy)
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:8199/v1")
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setenv("RAG_SFT_LLM_MODEL", "qwen2.5-72b-instruct")
    completions = Completions()
    assert completions.strategy == strategy
    assert (completions.base_url, completions.model) == ("http://127.0.0.1:8199/v1", "qwen2.5-72b-instruct")
    # The key is read from its variable where it is used, shown by name only.
    assert completions.api_key_variable() == "OPENAI_API_KEY"
    assert KEY not in repr(completions)


def test_two_endpoints_serving_one_model_name_do_not_share_cached_answers(pipeline, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    write_day(pipeline, [f"问题{n}:退款需要多久?" for n in range(3)])
    with running_stub() as first_server, running_stub() as second_server:
        pipeline.materialize(DAY, completions=llm_completions(first_server))
        second = pipeline.metadata(pipeline.materialize(DAY, completions=llm_completions(second_server)), "sft_records")
        assert (second["llm_requests"], second["llm_cache_hits"]) == (3, 0)
        assert len(second_server.state.served) == 3
        # Each endpoint keeps its own answers: back at the first, nothing is asked again.
        again = pipeline.metadata(pipeline.materialize(DAY, completions=llm_completions(first_server)), "sft_records")
        assert (again["llm_requests"], again["llm_cache_hits"]) == (0, 3)


def test_a_day_whose_gateway_answers_in_parts_huge_or_blank_exports_and_counts_each_reply(pipeline, monkeypatch):
    """One reply as a list of parts used to fail the whole day on every re-run; now text parts
    are read and every other odd reply is filtered with its reason, counted like the others."""
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    faults = {
        "Q-parts": ["parts"],
        "Q-image": ["image_parts"] * 3,
        "Q-huge": ["huge"],
        "Q-blank": ["invisible"],
        "Q-anonymous": ["no_model"],
    }
    write_day(pipeline, [f"问题{n}:退款需要多久?" for n in range(20)] + [f"{marker} 运费谁出?" for marker in faults])
    with running_stub(faults=faults) as stub:
        records = pipeline.metadata(pipeline.materialize(DAY, completions=llm_completions(stub)), "sft_records")
    assert records["accepted"] == 25 and records["exported"] == 22 and records["completion_failed"] == 3
    reasons = {row.data["reason"]: row.data["count"] for row in records["filter_reasons"].records}
    assert reasons == {"completion_malformed_response": 1, "completion_too_long": 1, "completion_empty_completion": 1}
    lines = {line["question"]: line for line in map(orjson.loads, pipeline.jsonl(DAY).read_bytes().splitlines())}
    parts_answer = next(request.answer for request in stub.state.served if request.fault == "parts")
    assert lines["Q-parts 运费谁出?"]["completion"] == parts_answer  # both parts, joined
    assert lines["Q-anonymous 运费谁出?"]["completion_model"] == "unknown"
    assert {line["completion_model"] for q, line in lines.items() if q != "Q-anonymous 运费谁出?"} == {"teacher"}
    assert max(len(line["completion"]) for line in lines.values()) < 512 * 8
    assert not {"Q-image 运费谁出?", "Q-huge 运费谁出?", "Q-blank 运费谁出?"} & set(lines)
