"""`make run`'s sample week: its days are corrected by the labelled stand-in corrector (llm
completions that can be right, through the real openai client), a user's events never are."""

import os
import subprocess
import sys

import orjson

from rag_sft.cli.sample_data import STAND_IN_MODEL, holds_only_sample_events, wants_stand_in, write_sample_days
from rag_sft.core import rules


def test_the_sample_week_is_corrected_by_the_stand_in_and_says_so(tmp_path):
    environment = {key: value for key, value in os.environ.items() if key not in ("RAG_SFT_LANDING_DIR", "RAG_SFT_COMPLETION_STRATEGY")}
    environment |= {"RAG_SFT_DATA_DIR": str(tmp_path / "data"), "DAGSTER_HOME": str(tmp_path / "dagster_home")}
    done = subprocess.run(
        [sys.executable, "-m", "rag_sft.cli.main", "run", "--skip-training", "--sample-events-per-day", "30"],
        env=environment, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "generating 7 days of sample events" in done.stdout
    assert "stand-in corrector" in done.stdout and STAND_IN_MODEL in done.stdout  # the summary names the model
    # Each day's triage: its four routes add up to the day's accepted events.
    lines = done.stdout.splitlines()
    days = {line.split()[0]: [int(n) for n in line.split()[1:7]] for line in lines if line[:4] == "2026" and line.split()[-1] == "ok"}
    start = next(n for n, line in enumerate(lines) if line.startswith("Triage of the accepted events"))
    routes = {line.split()[0]: [int(n) for n in line.split()[1:]] for line in lines[start + 2 : start + 2 + len(days)]}
    assert set(routes) == set(days) and len(days) == 7
    for day, (read, _exported, _filtered, _held, duplicates, rejected) in days.items():
        generation, retrieval, both, review, pairs, gaps = routes[day]
        assert generation + retrieval + both + review == read - duplicates - rejected
        assert pairs + gaps == retrieval + both
    records = [
        orjson.loads(line)
        for path in sorted((tmp_path / "data" / "datasets" / "sft").glob("date=*/records.jsonl"))
        for line in path.read_bytes().splitlines()
    ]
    assert len(records) > 50
    assert {(r["completion_strategy"], r["completion_model"]) for r in records} == {("llm", STAND_IN_MODEL)}
    answers = {}
    for path in (tmp_path / "data" / "landing").glob("*.jsonl"):
        for line in path.read_bytes().splitlines():
            try:
                event = orjson.loads(line)
                answers[event["request_id"]] = event["answer"]
            except (orjson.JSONDecodeError, KeyError, TypeError):
                pass  # the sample's malformed lines
    for record in records:
        documents, _ = rules.prompt_parts(record["prompt"])
        # Grounded in the best-ranked document, and not the answer users complained about
        assert record["completion"] and record["completion"] in documents[0]
        assert record["completion"] not in answers[record["request_id"]]


def test_only_a_folder_of_generated_files_and_no_chosen_strategy_gets_the_stand_in(tmp_path, monkeypatch):
    monkeypatch.delenv("RAG_SFT_COMPLETION_STRATEGY", raising=False)
    landing = tmp_path / "landing"
    assert not holds_only_sample_events(landing)
    write_sample_days(landing, events_per_day=2)
    assert holds_only_sample_events(landing) and wants_stand_in(landing, {})
    assert not wants_stand_in(landing, {"resources": {"completions": {"config": {"strategy": "naive"}}}})
    monkeypatch.setenv("RAG_SFT_COMPLETION_STRATEGY", "naive")
    assert not wants_stand_in(landing, {})  # the user's choice stands
    monkeypatch.delenv("RAG_SFT_COMPLETION_STRATEGY")
    (landing / "users-events.jsonl").write_text("{}\n")
    assert not holds_only_sample_events(landing)  # a user's events are never corrected by the stand-in
