"""The documented PostgreSQL instance file is a valid Dagster instance config with run monitoring on."""

import shutil
from pathlib import Path

from dagster._core.instance.config import dagster_instance_config

REPO = Path(__file__).resolve().parents[2]


def test_the_postgres_instance_file_is_valid_and_enables_run_monitoring(tmp_path, monkeypatch):
    for name in ("HOST", "PORT", "USER", "PASSWORD", "DB"):
        monkeypatch.setenv(f"RAG_SFT_PG_{name}", "5432" if name == "PORT" else "x")
    shutil.copy(REPO / "deploy" / "dagster-postgres.yaml", tmp_path / "dagster.yaml")
    config, _ = dagster_instance_config(str(tmp_path))
    assert config["run_monitoring"] == {
        "enabled": True, "poll_interval_seconds": 30, "start_timeout_seconds": 180, "cancel_timeout_seconds": 180,
    }  # fmt: skip
