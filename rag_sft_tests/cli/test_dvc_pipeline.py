"""The DVC pipeline (dvc.yaml, params.yaml) in a temporary git repository: `dvc repro` builds the
daily JSONL, a dataset version and a model through Dagster; `dvc push` to the local remote;
an old commit's data comes back byte for byte with `dvc checkout`, and with `dvc pull` after
the workspace copy and the cache are deleted. dvc runs from its own environment (.venv-dvc)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from datetime import date
from pathlib import Path

import pytest
import yaml

from rag_sft.core.generator import GeneratorSettings, day_lines

REPO = Path(__file__).resolve().parents[2]
DAYS = ["2026-11-17", "2026-11-18", "2026-11-19"]
GIT_IDENTITY = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com", "GIT_COMMITTER_NAME": "t",
                "GIT_COMMITTER_EMAIL": "t@example.com"}  # fmt: skip


def dvc_binary() -> str:
    path = Path(os.environ.get("RAG_SFT_DVC") or REPO / ".venv-dvc" / "bin" / "dvc")
    if not path.exists():
        pytest.fail(f"dvc not found at {path}: `make test` creates .venv-dvc (dvc needs its own environment)")
    return str(path)


def tree(*folders: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for folder in folders for p in sorted(folder.rglob("*")) if p.is_file()}


def test_dvc_repro_push_checkout_and_pull_bring_a_version_back_byte_for_byte(tmp_path, tiny_base):
    dvc = dvc_binary()
    work = tmp_path / "repo"
    (work / ".dvc").mkdir(parents=True)
    for name in ("dvc.yaml", "params.yaml", ".gitignore", ".dvcignore", ".dvc/config", ".dvc/.gitignore"):
        shutil.copy(REPO / name, work / name)
    # the code the stages depend on (a changed rule rebuilds them), as in a clone of the project
    shutil.copytree(REPO / "rag_sft", work / "rag_sft", ignore=shutil.ignore_patterns("__pycache__"))
    (work / ".venv").symlink_to(sys.prefix)  # the stages call .venv/bin/rag-sft, as in the project
    landing = work / "data" / "landing"
    landing.mkdir(parents=True)
    for day in DAYS:
        with (landing / f"events-{day}.jsonl").open("wb") as handle:
            handle.writelines(day_lines(date.fromisoformat(day), GeneratorSettings(events_per_day=150)))
    env = {key: value for key, value in os.environ.items() if key not in ("RAG_SFT_DATA_DIR", "RAG_SFT_LANDING_DIR")}
    env.update(GIT_IDENTITY, DAGSTER_HOME=str(work / ".dagster_home"), RAG_SFT_BASE_MODEL=str(tiny_base),
               RAG_SFT_TRAIN_MAX_LENGTH="64", RAG_SFT_TRAIN_LEARNING_RATE="0.005",
               RAG_SFT_TRAIN_ON_NAIVE_COMPLETIONS="1")  # the fixtures' completions are naive; DVC's steps are tested  # fmt: skip

    def run(*command: str) -> str:
        done = subprocess.run(command, cwd=work, env=env, capture_output=True, text=True, check=False)
        assert done.returncode == 0, f"{' '.join(command)}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        return done.stdout

    def set_range(start: str, end: str) -> None:
        params = yaml.safe_load((work / "params.yaml").read_text())
        params["export"] = {"start": start, "end": end}
        # params.yaml's train settings are the stage's run config (they win over the variables
        # above): short samples and a few short A/B answers on the tiny model, as in test_erasure.
        # DVC's steps are the subject here, not the quality of the model.
        params["train"]["resources"]["lora_training"].update(max_length=64, learning_rate=0.005)
        params["train"]["resources"]["evaluator"].update(eval_questions=4, max_new_tokens=8)
        (work / "params.yaml").write_text(yaml.safe_dump(params))

    datasets = work / "data" / "datasets"
    registry = work / "data" / "models" / "registry.json"
    run("git", "init", "-q")
    set_range(DAYS[0], DAYS[1])
    run("git", "add", "-A")
    run("git", "commit", "-qm", "pipeline")

    run(dvc, "repro")
    lock = yaml.safe_load((work / "dvc.lock").read_text())
    assert set(lock["stages"]) == {"export", "version", "train"}
    assert {out["path"] for stage in lock["stages"].values() for out in stage["outs"]} == {
        "data/datasets/sft", "data/datasets/versions", "data/models",
    }  # fmt: skip
    assert all(out["md5"].endswith(".dir") for stage in lock["stages"].values() for out in stage["outs"])
    assert lock["stages"]["export"]["params"]["params.yaml"]["export"] == {"start": DAYS[0], "end": DAYS[1]}
    manifest = json.loads((datasets / "versions" / "v001" / "manifest.json").read_text())
    assert [entry["day"] for entry in manifest["days"]] == DAYS[:2]
    assert [(e["version"], e["dataset_version"]) for e in json.loads(registry.read_text())["versions"]] == [("v0001", "v001")]
    run("git", "add", "-A")
    run("git", "commit", "-qm", "dataset v001")
    run(dvc, "push")
    assert any((work / ".dvc-storage").rglob("*"))
    first = tree(datasets / "sft", datasets / "versions")

    set_range(DAYS[0], DAYS[2])
    run(dvc, "repro")
    assert sorted(p.name for p in (datasets / "versions").iterdir()) == ["v001", "v002"]
    assert tree(datasets / "versions" / "v001") == {k: v for k, v in first.items() if "/versions/v001/" in k}
    trained = [(e["version"], e["dataset_version"]) for e in json.loads(registry.read_text())["versions"]]
    assert trained == [("v0001", "v001"), ("v0002", "v002")]
    run("git", "add", "-A")
    run("git", "commit", "-qm", "dataset v002")
    run(dvc, "push")

    # Months later: the old commit's data, from the cache, then from the remote alone.
    run("git", "checkout", "-q", "HEAD~1")
    run(dvc, "checkout")
    assert tree(datasets / "sft", datasets / "versions") == first
    shutil.rmtree(datasets)
    shutil.rmtree(work / ".dvc" / "cache")
    run(dvc, "pull")
    assert tree(datasets / "sft", datasets / "versions") == first
