"""Small builders shared by the tests."""

from __future__ import annotations

from pathlib import Path

import orjson


def event(request_id: str, timestamp: str = "2026-11-19T08:00:00Z", **overrides) -> dict:
    value = {
        "request_id": request_id,
        "question": overrides.pop("question", "退款需要多久?"),
        "docs": overrides.pop(
            "docs",
            [
                {"id": "d1", "content": "退款在七个工作日内到账。", "score": 0.9},
                {"id": "d2", "content": "节假日顺延。", "score": 0.4},
            ],
        ),
        "answer": overrides.pop("answer", "三天内一定到账。"),
        "evaluation": {
            "score": overrides.pop("score", 0.6),
            "labels": overrides.pop("labels", ["factuality_error"]),
            "checks": {"factuality": 0.3},
            "suggestion": "引用文档",
        },
        "timestamp": timestamp,
    }
    value.update(overrides)
    return value


def write_lines(path: Path, lines: list) -> Path:
    """Write events (dicts) and raw lines (bytes/str) as JSON Lines."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as handle:
        for line in lines:
            if isinstance(line, dict):
                line = orjson.dumps(line)
            elif isinstance(line, str):
                line = line.encode()
            handle.write(line + b"\n")
    return path


def write_sql_rows(url: str, id_type: str, rows: list[tuple[object, dict]]) -> None:
    """Events as rows of a new `raw_quality_events` table (docs and evaluation as JSON text)
    whose `id` is whatever the caller says: any column type, NULL, or repeated."""
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    with engine.begin() as connection:
        connection.execute(sa.text(
            f"CREATE TABLE raw_quality_events (id {id_type}, request_id TEXT, question TEXT, "
            "docs TEXT, answer TEXT, evaluation TEXT, timestamp TEXT)"
        ))
        for row_id, value in rows:
            json_columns = {column: orjson.dumps(value[column]).decode() for column in ("docs", "evaluation")}
            connection.execute(sa.text(
                "INSERT INTO raw_quality_events (id, request_id, question, docs, answer, evaluation, timestamp) "
                "VALUES (:id, :request_id, :question, :docs, :answer, :evaluation, :timestamp)"
            ), {**value, **json_columns, "id": row_id})
    engine.dispose()


def sample_records(count: int, seed: int = 3) -> list:
    """Prompt/completion training records in the shape of the exported ones, from generated events."""
    from datetime import date

    from rag_sft.core.generator import GeneratorSettings, day_lines
    from rag_sft.training.sft import TrainingRecord

    records = []
    for line in day_lines(date(2026, 11, 19), GeneratorSettings(events_per_day=count, seed=seed)):
        event = orjson.loads(line)
        docs = "\n".join(doc["content"][:80] for doc in event["docs"][:2])
        label = (event["evaluation"]["labels"] or ["unspecified"])[0]
        weight = 1.0 + len(label) % 3 * 0.5
        records.append(TrainingRecord(f"{docs}\n\n# 问题\n{event['question']}", "【纠正】" + event["answer"][:60], label, weight))
    return records


def run_day_script(day: str) -> str:
    """Python code that materializes `day` through the daily job on the instance and folders of
    its environment (DAGSTER_HOME, RAG_SFT_*), as `rag-sft run` does: for tests that need a run in
    a process of its own (to race it, kill it, or read beside it)."""
    return (
        "import sys, dagster as dg\n"
        "from rag_sft.cli.runner import materialize_day\n"
        "from rag_sft.definitions import DAILY_JOB, defs\n"
        f"report = materialize_day(defs.resolve_job_def(DAILY_JOB), {day!r}, dg.DagsterInstance.get())\n"
        "print(report.success, report.failure)\n"
        "sys.exit(0 if report.success else 1)\n"
    )


HELD_BACK_BY_TEST = "confidence: failed on purpose by the test"


def hold_back_days(monkeypatch) -> None:
    """Every day's confidence check fails at ERROR from now on, so the day is held back. The
    filter keeps low-confidence records out and the label mix only warns (docs/spec.md, "Rule 12: Balance"): no
    realistic day fails a check at ERROR, yet the gate must still hold one back if it did."""
    import dataclasses

    from rag_sft.core import checks

    real = checks.confidence_verdict

    def failing(*args, **kwargs):
        return dataclasses.replace(real(*args, **kwargs), passed=False, severity=checks.ERROR, description=HELD_BACK_BY_TEST)

    monkeypatch.setattr(checks, "confidence_verdict", failing)
