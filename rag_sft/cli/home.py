"""The project's DAGSTER_HOME, made ready before any command opens the instance."""

from __future__ import annotations

import os
from pathlib import Path

# The first line marks a dagster.yaml this project wrote, which it may bring up to date.
PROJECT_HEADER = "# Embedded SQLite storage under this folder (Dagster's default).\n"
# The daemon (make ui, and make run while it trains) fails runs stuck starting or cancelling,
# and those past their `dagster/max_runtime` tag. Dagster's default run launcher cannot check
# its run workers: a run whose process was killed is failed by the code server that launched it,
# or, when a rag-sft command executed it in its own process, by the next command (see
# `runner.fail_runs_of_dead_processes`).
RUN_MONITORING = """run_monitoring:
  enabled: true
  poll_interval_seconds: 30
  start_timeout_seconds: 180
  cancel_timeout_seconds: 180
"""
DAGSTER_YAML = PROJECT_HEADER + "telemetry:\n  enabled: false\n" + RUN_MONITORING


def ensure_dagster_home() -> Path:
    """DAGSTER_HOME (default: .dagster_home in the project) with SQLite storage, telemetry off and
    run monitoring on, its storage created before any run starts.

    Under an exclusive lock: two processes creating a new SQLite instance at once both stamp
    its schema, leaving two alembic heads that fail every later run.
    """
    import fcntl

    home = Path(os.environ.setdefault("DAGSTER_HOME", str(Path(".dagster_home").absolute())))
    home.mkdir(parents=True, exist_ok=True)
    with (home / ".rag-sft-init.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        config = home / "dagster.yaml"
        if not config.exists():
            config.write_text(DAGSTER_YAML)
        elif (text := config.read_text()).startswith(PROJECT_HEADER) and "run_monitoring:" not in text:
            config.write_text(text.rstrip("\n") + "\n" + RUN_MONITORING)  # a home from before monitoring
        _create_storage()
    return home


def _create_storage() -> None:
    """Open the instance and touch each storage, which creates and stamps its tables if new;
    fail the runs that an earlier command, since killed, left unfinished."""
    import dagster as dg

    from rag_sft.cli.runner import fail_runs_of_dead_processes

    with dg.DagsterInstance.get() as instance:
        instance.get_asset_keys()
        instance.all_instigator_state()
        fail_runs_of_dead_processes(instance)
