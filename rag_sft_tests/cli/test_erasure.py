"""Erasure on request, end to end, as an operator runs it in a DVC project (a temporary git
repository with the project's dvc.yaml, params.yaml and local remote, as test_dvc_pipeline.py):
7 days with LLM-corrected answers (a local stub) and every trainer export, a dataset version of
all 7 days and a model trained on it, everything pushed; then `rag-sft erase --dvc` of 3
request ids (one also as a duplicate, one also as an unreadable line, a late copy of one after
the erasure). Afterwards no byte of their questions or answers is left under the data folder
(Parquet read back, SQLite and every other file searched), the DVC cache or the remote; counts
reconcile with `erased`; re-running the days keeps them out; the registry flags the model."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import dagster as dg
import orjson
import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml

from rag_sft.cli.home import ensure_dagster_home
from rag_sft.core.generator import GeneratorSettings, day_lines
from rag_sft.testing.openai_server import running_stub
from rag_sft_tests.assets.test_near_duplicates import DAY1, distinct_events
from rag_sft_tests.cli.test_dvc_pipeline import GIT_IDENTITY, REPO, dvc_binary
from rag_sft_tests.conftest import Pipeline
from rag_sft_tests.helpers import write_lines

DAYS = [f"2026-11-{day:02d}" for day in range(10, 17)]
TABLES = ("raw_events", "rejected_events", "annotated_samples", "sft_records")


# Three different questions: near-identical ones would be one sample (docs/spec.md, "Rule 13: One sample per question").
OWN_WORDS = ("what about my own account number 4417", "why was my parcel 8812 sent back", "when does my refund 3090 arrive")


def secret(kind: str, n: int) -> str:
    return f"{kind}SECRET{n}zq {OWN_WORDS[n]}"


def landing_days(landing: Path, erased: dict[str, str], days: list[str] = DAYS) -> None:
    """A landing file of events per day; the events of `erased` (request_id -> day) get their own
    question and answer text (so a search for it finds them and nothing else)."""
    landing.mkdir(parents=True, exist_ok=True)
    for day in days:
        lines = list(day_lines(date.fromisoformat(day), GeneratorSettings(events_per_day=50, seed=3)))
        for n, request_id in enumerate(erased):
            if erased[request_id] != day:
                continue
            at = next(i for i, line in enumerate(lines) if orjson.loads(line)["evaluation"]["score"] >= 0.5)
            event = orjson.loads(lines[at])
            event.update(request_id=request_id, question=secret("Q", n), answer=secret("A", n))
            lines[at] = orjson.dumps(event) + b"\n"
            if n == 0:  # a second copy the same day: a duplicate
                lines.append(lines[at])
            if n == 1:  # a damaged copy: no readable request_id, only its raw text names it
                lines.append(orjson.dumps(event)[:-30] + b"\n")
        (landing / f"events-{day}.jsonl").write_bytes(b"".join(lines))


def files_holding(texts: list[str], *roots: Path, skip: Path | None = None) -> dict[str, list[str]]:
    """Every file under `roots` (not under `skip`) holding one of `texts`: raw bytes, and for
    Parquet (compressed pages) its rows read back."""
    found: dict[str, list[str]] = {}
    needles = [text.encode() for text in texts]
    for root in roots:
        for path in (p for p in root.rglob("*") if p.is_file() and not (skip and skip in p.parents)):
            data = path.read_bytes()
            if path.suffix == ".parquet":
                data += orjson.dumps(pq.read_table(path).to_pylist(), default=str)
            hits = [text for text, needle in zip(texts, needles) if needle in data]
            if hits:
                found[str(path)] = hits
    return found


def parquet_rows(data: Path) -> dict[str, int]:
    return {
        table: sum(pq.read_metadata(p).num_rows for p in (data / "warehouse" / table).glob("*/*.parquet"))
        for table in TABLES
    }


def test_erase_reaches_every_artefact_the_dvc_remote_and_the_registry(tmp_path, tiny_base, monkeypatch):
    dvc = dvc_binary()
    work = tmp_path / "repo"
    (work / ".dvc").mkdir(parents=True)
    for name in ("dvc.yaml", "params.yaml", ".gitignore", ".dvcignore", ".dvc/config", ".dvc/.gitignore"):
        shutil.copy(REPO / name, work / name)
    (work / ".venv").symlink_to(sys.prefix)
    shutil.copytree(REPO / "rag_sft", work / "rag_sft", ignore=shutil.ignore_patterns("__pycache__"))  # stage deps
    erased = {"req-erase-a": DAYS[0], "req-erase-b": DAYS[3], "req-erase-c": DAYS[6]}
    texts = [secret(kind, n) for n in range(3) for kind in "QA"]
    landing_days(work / "data" / "landing", erased)
    data = work / "data"

    with running_stub() as stub:
        params = yaml.safe_load((work / "params.yaml").read_text())
        params["export"]["resources"]["completions"] = {
            "strategy": "llm",
            "base_url": stub.base_url,
            "model": "teacher",
        }
        params["train"]["resources"]["lora_training"].update(max_length=64, learning_rate=0.005)
        params["train"]["resources"]["evaluator"].update(eval_questions=4, max_new_tokens=8)
        (work / "params.yaml").write_text(yaml.safe_dump(params))
        env = {
            key: value for key, value in os.environ.items() if key not in ("RAG_SFT_DATA_DIR", "RAG_SFT_LANDING_DIR")
        }
        env.update(GIT_IDENTITY, DAGSTER_HOME=str(work / ".dagster_home"), RAG_SFT_BASE_MODEL=str(tiny_base),
                   RAG_SFT_EXPORT_FORMATS="all", OPENAI_API_KEY="test-key", RAG_SFT_START_DATE="2026-01-01",
                   RAG_SFT_DVC=dvc, RAG_SFT_TRIAGE="false")  # fmt: skip  (triage off: every erased sample was corrected)

        def run(*command: str) -> str:
            done = subprocess.run(command, cwd=work, env=env, capture_output=True, text=True, check=False)
            assert done.returncode == 0, f"{' '.join(command)}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
            return done.stdout

        run("git", "init", "-q")
        run("git", "add", "-A")
        run("git", "commit", "-qm", "pipeline")
        run(dvc, "repro")  # 7 days, dataset version v001 of all of them, model v0001 trained on it
        run("git", "add", "-A")
        run("git", "commit", "-qm", "dataset v001")
        run(dvc, "push")

        registry = json.loads((data / "models" / "registry.json").read_text())
        assert [(e["version"], e["dataset_version"]) for e in registry["versions"]] == [("v0001", "v001")]
        searched = (data, work / ".dvc", work / ".dvc-storage")  # .dvc: the cache, and its tmp indexes
        before = files_holding(texts, *searched, skip=data / "landing")
        assert any("/.dvc-storage/" in path for path in before) and any("/versions/v001/" in path for path in before)
        assert any(path.endswith(".parquet") for path in before)
        cache = data / "cache" / "completions.sqlite"
        cache_before = sqlite3.connect(cache).execute("SELECT COUNT(*) FROM completions").fetchone()[0]
        rows_before = parquet_rows(data)
        v001_before = json.loads((data / "datasets" / "versions" / "v001" / "manifest.json").read_text())

        (tmp_path / "ids.txt").write_text("req-erase-b\n# a comment\nreq-erase-c\n")
        started = time.perf_counter()
        output = run(
            ".venv/bin/rag-sft",
            "erase",
            "--request-id",
            "req-erase-a",
            "--from-file",
            str(tmp_path / "ids.txt"),
            "--dvc",
        )
        erase_seconds = time.perf_counter() - started
        report = json.loads(output[: output.index("\n}\n") + 2])

        # Nothing of theirs is left: the data folder (the landing folder is the source, not
        # derived from it), the DVC cache and the remote.
        assert files_holding(texts, *searched, skip=data / "landing") == {}
        rows_after = parquet_rows(data)
        # a: 2 events (+1 duplicate row), b: 1 event (+1 unreadable copy), c: 1 event
        assert rows_before["raw_events"] - rows_after["raw_events"] == 3
        assert rows_before["rejected_events"] - rows_after["rejected_events"] == 2
        assert rows_before["sft_records"] - rows_after["sft_records"] == 3
        assert sorted(report["days"]) == [DAYS[0], DAYS[3], DAYS[6]]
        cache_after = sqlite3.connect(cache).execute("SELECT COUNT(*) FROM completions").fetchone()[0]
        assert cache_before - cache_after == report["cache_entries_removed"] == 3
        v001 = json.loads((data / "datasets" / "versions" / "v001" / "manifest.json").read_text())
        assert v001["records"] == v001_before["records"] - 3 and v001["hash"] != v001_before["hash"]
        assert v001["erasures"][0]["previous_hash"] == v001_before["hash"]
        model = json.loads((data / "models" / "registry.json").read_text())["versions"][0]
        assert (model["trained_on_erased"], model["erased_records"]) == (True, 3)
        assert model["status"] == registry["versions"][0]["status"]  # still usable: retraining is the operator's choice
        assert report["models_trained_on_erased"] == {"v0001": 3}
        assert "v0001 (3 records)" in output
        run("git", "add", "-A")
        run("git", "commit", "-qm", "erasure")
        # The commit before still names the old hashes, but their objects are gone from the cache
        # and the remote: its datasets cannot come back (the new commit's can).
        run("git", "checkout", "-q", "HEAD~1")
        old = subprocess.run([dvc, "pull"], cwd=work, env=env, capture_output=True, text=True, check=False)
        assert old.returncode != 0 and files_holding(texts, *searched, skip=data / "landing") == {}
        run("git", "checkout", "-q", "-")
        run(dvc, "checkout", "--force")
        assert json.loads((data / "datasets" / "versions" / "v001" / "manifest.json").read_text()) == v001

        # A late copy of an erased event, then every day again: they stay out, counts reconcile.
        late = next(
            line
            for line in (data / "landing" / f"events-{DAYS[6]}.jsonl").read_bytes().splitlines()
            if b"req-erase-c" in line
        )
        (data / "landing" / "late.jsonl").write_bytes(late + b"\n")
        run(".venv/bin/rag-sft", "run", "--skip-training", "--params", "params.yaml")
    assert files_holding(texts, data, skip=data / "landing") == {}
    monkeypatch.setenv("DAGSTER_HOME", str(work / ".dagster_home"))
    erased_per_day = {}
    with dg.DagsterInstance.get() as instance:
        for day in DAYS:
            record = instance.fetch_materializations(
                dg.AssetRecordsFilter(dg.AssetKey("raw_events"), asset_partitions=[day]), limit=1
            ).records[0]
            counts = {
                key: value.value
                for key, value in record.asset_materialization.metadata.items()
                if isinstance(value.value, int)
            }
            assert (
                counts["events_read"]
                == counts["accepted"] + counts["duplicates"] + counts["rejected"] + counts["erased"]
            )
            erased_per_day[day] = counts["erased"]
    assert erased_per_day == {day: {DAYS[0]: 2, DAYS[3]: 2, DAYS[6]: 2}.get(day, 0) for day in DAYS}
    print(
        f"\nrows before {rows_before} after {rows_after}; v001 records {v001_before['records']} -> {v001['records']}; "
        f"cache entries {cache_before} -> {cache_after}; files holding the texts before: {len(before)}; "
        f"erase (3 ids, 7 days, with --dvc) took {erase_seconds:.1f} s wall ({output.strip().splitlines()[-1]}); "
        f"pull of the old commit: {(old.stdout + old.stderr).strip().splitlines()[-1:]}"
    )


@pytest.fixture
def cli_pipeline(tmp_path, monkeypatch):
    """Days materialized in this process on the instance of DAGSTER_HOME (as `rag-sft` makes
    it), so a `rag-sft` command run beside them (`rag_sft`) sees their runs and data."""
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    ensure_dagster_home()
    with dg.DagsterInstance.get() as instance:
        yield Pipeline(tmp_path, instance)


def rag_sft(pipeline: Pipeline, *command: str) -> str:
    """A `rag-sft` command on the pipeline's instance and data folder; its output."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("RAG_SFT_")}
    env.update(RAG_SFT_DATA_DIR=pipeline.data_dir, PYTHONPATH=str(REPO))
    done = subprocess.run(
        [sys.executable, "-m", "rag_sft.cli.main", *command], cwd=REPO, env=env, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, f"rag-sft {' '.join(command)}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def test_erase_from_a_file_with_a_byte_order_mark_and_windows_line_ends_erases_every_id(cli_pipeline, tmp_path):
    write_lines(cli_pipeline.landing / "day1.jsonl", distinct_events(DAY1, "a"))
    cli_pipeline.materialize(DAY1)
    ids = tmp_path / "ids.txt"
    ids.write_bytes("a1\r\n  a4 \r\n# a comment\r\n\r\na7\r\n".encode("utf-8-sig"))  # as Notepad or Excel save it

    report = json.loads(rag_sft(cli_pipeline, "erase", "--from-file", str(ids)).split("\n}\n")[0] + "}")
    assert report["request_ids"] == 3
    left = set(pd.read_parquet(cli_pipeline.data / "warehouse" / "sft_records")["request_id"])
    assert left == {f"a{n}" for n in range(10)} - {"a1", "a4", "a7"}
