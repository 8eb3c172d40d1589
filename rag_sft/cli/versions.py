"""`rag-sft version` and `rag-sft train`: dataset versions and training on one, through Dagster
on the project's instance (what the DVC stages call)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

from rag_sft.core.names import dataset_version_name, day_name


def cmd_version(args: argparse.Namespace) -> int:
    """Materialize sft_dataset_version for the exportable days in [start, end]; print its name."""
    if refused := _refused(lambda: [day_name(day) for day in (args.start, args.end) if day]):
        return refused
    import dagster as dg

    from rag_sft.assets.versions import sft_dataset_version
    from rag_sft.cli.main import ensure_dagster_home
    from rag_sft.cli.runner import QUIET_RUN_CONFIG, process_tags
    from rag_sft.definitions import defs

    ensure_dagster_home()
    warehouse = defs.resources["warehouse"]
    run_config = {**QUIET_RUN_CONFIG, "ops": {"sft_dataset_version": {"config": {"start": args.start, "end": args.end}}}}
    result = dg.materialize(
        [sft_dataset_version],
        instance=dg.DagsterInstance.get(),
        resources={"warehouse": warehouse},
        run_config=run_config,
        raise_on_error=False,
        tags=process_tags(),
    )
    if not result.success:
        print(f"error: {_failure(result)}", file=sys.stderr)
        return 1
    metadata = {k: v.value for k, v in result.asset_materializations_for_node("sft_dataset_version")[0].metadata.items()}
    state = "created" if metadata["created"] else "already existed"
    print(f"dataset version {metadata['dataset_version']} ({state}): {len(metadata['days'])} days "
          f"{metadata['days'][0]} .. {metadata['days'][-1]}, {metadata['records']} records, hash {metadata['version_hash'][:12]}")
    print(f"  {metadata['version_path']}/manifest.json")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    """Run lora_training_job on a dataset version (by name, or the latest) and report the model version."""
    if args.version != "latest" and (refused := _refused(lambda: dataset_version_name(args.version))):
        return refused
    import dagster as dg

    from rag_sft.cli.main import ensure_dagster_home
    from rag_sft.cli.runner import QUIET_RUN_CONFIG, process_tags
    from rag_sft.definitions import defs
    from rag_sft.io.model_registry import ModelRegistry
    from rag_sft.sensors.training import TRAINING_JOB

    ensure_dagster_home()
    job = defs.resolve_job_def(TRAINING_JOB)
    run_config = {**QUIET_RUN_CONFIG, "ops": {"training_dataset": {"config": {"version": args.version}}}}
    result = job.execute_in_process(
        run_config=run_config, instance=dg.DagsterInstance.get(), raise_on_error=False,
        tags={"rag_sft/requested_version": args.version, **process_tags()},
    )  # fmt: skip
    if not result.success:
        print(f"error: training failed: {_failure(result)}", file=sys.stderr)
        return 1
    registry = ModelRegistry(Path(defs.resources["warehouse"].data_dir) / "models")
    entry = next(e for e in registry.versions() if e.get("run_id") == result.run_id)
    print(json.dumps({k: entry.get(k) for k in ("version", "dataset_version", "status", "eval_loss", "base_eval_loss", "reason")}))
    return 0


def _refused(check: Callable[[], object]) -> int:
    """2 with the reason on stderr when `check` finds a name that cannot be a path, else 0."""
    try:
        check()
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


def _failure(result) -> str:
    from rag_sft.cli.runner import step_failure_messages

    return "; ".join(step_failure_messages(result)) or "run failed"
