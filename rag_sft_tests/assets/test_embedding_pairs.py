"""Triage and embedding pairs through Dagster: the routes counted in the day's metadata, the
counts still adding up, the pairs' Parquet, JSONL and checks (docs/retriever.md)."""

from datetime import date

import dagster as dg
import orjson
import pandas as pd
from datasets import load_dataset

from rag_sft.assets.pairs import embedding_pairs
from rag_sft.core.generator import GeneratorSettings, day_lines
from rag_sft.resources import Triage
from rag_sft_tests.assets.test_erasure_gaps import erase
from rag_sft_tests.conftest import ALL_ASSETS
from rag_sft_tests.helpers import event, write_lines

DAY = "2026-11-19"
REFUND = [{"id": "d1", "content": "Refunds arrive within seven business days.", "score": 0.9},
          {"id": "d2", "content": "The warranty does not cover accidental damage.", "score": 0.4}]
OFF_TOPIC = [{"id": "w1", "content": "The warranty does not cover accidental damage.", "score": 0.21},
             {"id": "w2", "content": "Accounts are locked after five failed password attempts.", "score": 0.12}]
# The retriever ranked the passage that answers under one that does not.
UNDER_NOISE = [{**REFUND[0], "score": 0.3}, REFUND[1]]
QUESTION = "How long does a refund take to arrive?"


def events():
    english = {"answer": "It takes one day.", "score": 0.6}

    def asked(ticket):  # each user asks about their own order: no two samples are near-duplicates
        return {**english, "question": f"{QUESTION} Order {ticket}."}

    return [
        event("gen", docs=REFUND, **asked("A7F3C2")),  # relevant passages, factuality_error: the generator's
        event("ret", docs=OFF_TOPIC, labels=["low_relevance"], **asked("0B91DE")),  # nothing relevant fetched: a gap
        event("both", docs=UNDER_NOISE, **asked("5C4E88")),  # the answer ranked under noise
        event("judged", docs=REFUND, labels=["factuality_error"],  # the evaluator: context lacks the answer
              **{**asked("99AA01"), "evaluation": {"score": 0.6, "labels": ["factuality_error"], "checks": {"context_relevance": 0.1}}}),
        event("review", docs=REFUND, **{**asked("13D7F0"), "evaluation": {  # the checks pass yet the score is low
            "score": 0.6, "labels": [], "checks": {"context_relevance": 0.9, "faithfulness": 0.9}}}),
    ]


def materialize(pipeline, triage=None):
    return dg.materialize(
        [*ALL_ASSETS, embedding_pairs],
        partition_key=DAY,
        instance=pipeline.instance,
        resources={**pipeline.resources(), "triage": triage or Triage(similarity="wordllama")},
    )


def test_routes_are_counted_the_counts_reconcile_and_retrieval_faults_become_pairs(pipeline):
    write_lines(pipeline.landing / "e.jsonl", events())
    result = materialize(pipeline)
    annotated = pipeline.metadata(result, "annotated_samples")
    records = pipeline.metadata(result, "sft_records")
    assert {key: annotated[f"route/{key}"] for key in ("generation", "retrieval", "both", "review")} == {
        "generation": 1, "retrieval": 2, "both": 1, "review": 1}
    reasons = {(r.data["route"], r.data["reason"]): r.data["count"] for r in annotated["route_reasons"].records}
    assert reasons[("retrieval", "context missing by evaluator; generation fault")] == 1
    # accepted = exported + filtered + held_back, the triaged ones filtered with their reason.
    assert records["accepted"] == 5 == records["exported"] + records["filtered"] + records["held_back"]
    filtered = {r.data["reason"]: r.data["count"] for r in records["filter_reasons"].records}
    assert filtered == {"triage_retrieval": 2, "triage_review": 1}
    assert records["route/retrieval"] == 2 and records["exported"] == 2
    exported = [orjson.loads(line)["request_id"] for line in pipeline.jsonl(DAY).read_bytes().splitlines()]
    assert sorted(exported) == ["both", "gen"]  # no SFT sample teaches answering from passages without the answer

    pairs_meta = pipeline.metadata(result, "embedding_pairs")
    assert (pairs_meta["retrieval_faults"], pairs_meta["dagster/row_count"], pairs_meta["retrieval_gaps"]) == (3, 1, 2)
    table = pd.read_parquet(pipeline.data / "warehouse" / "embedding_pairs")
    assert list(table["request_id"]) == ["both"] and str(table["date"][0]) == DAY
    assert [p["content"] for p in table["pos"][0]] == [REFUND[0]["content"]]
    assert [p["content"] for p in table["neg"][0]] == [REFUND[1]["content"]]
    gaps = pd.read_parquet(pipeline.data / "warehouse" / "retrieval_gaps")
    assert sorted(gaps["request_id"]) == ["judged", "ret"]
    assert {r.data["request_id"] for r in pipeline.metadata(result, "retrieval_gaps")["gaps"].records} == {"judged", "ret"}

    path = pipeline.data / "datasets" / "embedding" / f"date={DAY}" / "pairs.jsonl"
    loaded = load_dataset("json", data_files=str(path), split="train")
    assert loaded.column_names == ["query", "pos", "neg", "pos_scores", "neg_scores", "prompt", "type"]
    assert loaded[0]["query"].startswith(QUESTION) and loaded[0]["pos"] == [REFUND[0]["content"]]

    checks = {e.check_name: e for e in result.get_asset_check_evaluations() if e.asset_key == dg.AssetKey("embedding_pairs")}
    assert set(checks) == {"pair_similarity", "query_length", "pairs_disjoint"}
    assert all(evaluation.passed for evaluation in checks.values())
    assert all(e.partition == DAY for e in checks.values())

    # Erasure on request reaches the pairs, their JSONL and the gaps.
    erase(pipeline, "both", "ret")
    assert pd.read_parquet(pipeline.data / "warehouse" / "embedding_pairs").empty
    assert list(pd.read_parquet(pipeline.data / "warehouse" / "retrieval_gaps")["request_id"]) == ["judged"]
    assert path.read_bytes() == b""


def test_short_queries_are_flagged_not_dropped(pipeline):
    write_lines(pipeline.landing / "e.jsonl", [event("short", question="Refund time?", docs=UNDER_NOISE)])
    result = materialize(pipeline)
    check = pipeline.check(result, "query_length")
    assert not check.passed and "1 of 1 queries flagged for review (short_query 1); kept" in check.description
    assert pipeline.metadata(result, "embedding_pairs")["dagster/row_count"] == 1


def test_triage_off_is_the_old_behaviour(pipeline):
    write_lines(pipeline.landing / "e.jsonl", events())
    result = materialize(pipeline, Triage(enabled=False))
    records = pipeline.metadata(result, "sft_records")
    assert records["exported"] == 5 and records["route/generation"] == 5
    assert pipeline.metadata(result, "embedding_pairs")["dagster/row_count"] == 0


def test_a_generated_day(pipeline):
    """Pairs of a realistic day: its English passages are unrelated to their questions (the
    generator draws them at random), which triage finds; every invariant holds."""
    with (pipeline.landing / "e.jsonl").open("wb") as handle:
        for line in day_lines(date.fromisoformat(DAY), GeneratorSettings(events_per_day=400, english_share=0.5)):
            handle.write(line)
    result = materialize(pipeline)
    annotated = pipeline.metadata(result, "annotated_samples")
    records = pipeline.metadata(result, "sft_records")
    routes = {route: annotated[f"route/{route}"] for route in ("generation", "retrieval", "both", "review")}
    assert sum(routes.values()) == annotated["dagster/row_count"] == records["accepted"]
    assert routes["retrieval"] > 0 and routes["generation"] > 0
    pairs_meta = pipeline.metadata(result, "embedding_pairs")
    assert pairs_meta["dagster/row_count"] + pairs_meta["retrieval_gaps"] == routes["retrieval"] + routes["both"]
    assert pipeline.check(result, "pairs_disjoint").passed
