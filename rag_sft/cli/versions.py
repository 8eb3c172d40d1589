"""`rag-sft version` and `rag-sft train`: dataset versions and training on one, through Dagster
on the project's instance (what the DVC stages call)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

from rag_sft.cli.home import ensure_dagster_home
from rag_sft.core.names import dataset_version_name, day_name


def cmd_version(args: argparse.Namespace) -> int:
    """Materialize sft_dataset_version for the exportable days in [start, end]; print its name."""
    if refused := _refused(lambda: [day_name(day) for day in (args.start, args.end) if day]):
        return refused
    import dagster as dg

    from rag_sft.assets.versions import sft_dataset_version
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
    """Run lora_training_job on a dataset version (by name, or the latest) and report the model
    version. The run is tagged with the dataset's hash as the training sensor tags its own, and
    its samples are marked as trained on in the sensor's ledger, so the sensor does not train
    the same data again."""
    if args.version != "latest" and (refused := _refused(lambda: dataset_version_name(args.version))):
        return refused
    import dagster as dg

    from rag_sft.assets.training import DATASET_TAG
    from rag_sft.cli.runner import process_tags
    from rag_sft.definitions import defs
    from rag_sft.io.registry.dataset_versions import DatasetVersions
    from rag_sft.io.registry.model_registry import ModelRegistry
    from rag_sft.io.state.training_ledger import TrainingLedger, trained_sample_ids
    from rag_sft.sensors.training import TRAINING_JOB

    ensure_dagster_home()
    warehouse = defs.resources["warehouse"]
    versions = DatasetVersions(warehouse.versions_dir())
    name = versions.latest() if args.version == "latest" else args.version
    try:
        dataset_hash = versions.manifest(name or "latest")["hash"]
    except KeyError as error:
        print(f"error: {error.args[0]}", file=sys.stderr)
        return 1
    job = defs.resolve_job_def(TRAINING_JOB)
    run_config = {**params_run_config(args.params, "train"), "ops": {"training_dataset": {"config": {"version": name}}}}
    result = job.execute_in_process(
        run_config=run_config, instance=dg.DagsterInstance.get(), raise_on_error=False,
        tags={"rag_sft/requested_version": args.version, DATASET_TAG: dataset_hash, **process_tags()},
    )  # fmt: skip
    if not result.success:
        print(f"error: training failed: {_failure(result)}", file=sys.stderr)
        return 1
    with warehouse.open_state(TrainingLedger) as store, store.transaction():
        store.mark_trained(trained_sample_ids(warehouse.versions_dir(), dataset_hash))
    registry = ModelRegistry(warehouse.models_dir())
    entry = next(e for e in registry.versions() if e.get("run_id") == result.run_id)
    keys = ("version", "dataset_version", "status", "eval_loss", "in_use", "in_use_eval_loss", "reason")
    print(json.dumps({k: entry.get(k) for k in keys}))
    if entry.get("ab_table"):
        print(entry["ab_table"])
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


def params_run_config(path: str, stage: str) -> dict:
    """The resource settings of a DVC stage (`<stage>.resources` in params.yaml) as Dagster run
    config, so the settings that shape a stage's outputs are DVC parameters of it."""
    import yaml

    from rag_sft.cli.runner import QUIET_RUN_CONFIG

    if not path:
        return QUIET_RUN_CONFIG
    resources = (yaml.safe_load(Path(path).read_text()) or {}).get(stage, {}).get("resources") or {}
    return {**QUIET_RUN_CONFIG, "resources": {name: {"config": values} for name, values in resources.items()}}
