"""`rag-sft state-import`: this machine's shared-truth SQLite files copied into the state
database (`RAG_SFT_STATE_URL`), once, when a deployment moves to it; each file is then renamed
`*.imported`, so the stores open the database from then on.

`rag-sft state rebuild [--params params.yaml]`: the erasure ledger, request index and
near-duplicate index rebuilt from the instance's erase runs and the warehouse's exported
partitions, after the state was lost (`rag_sft/lost_state.py`)."""

from __future__ import annotations

import argparse
import json
import sys

from rag_sft.cli.home import ensure_dagster_home


def import_local_state(warehouse) -> dict[str, dict[str, int]]:
    """Every store's local file imported into the warehouse's state database: rows per table."""
    from rag_sft.io.sql_urls import is_postgres_url
    from rag_sft.io.state.erasure_ledger import ErasureLedger
    from rag_sft.io.state.near_duplicate_index import NearDuplicateIndex
    from rag_sft.io.state.request_index import RequestIndex
    from rag_sft.io.state.state_db import StateUnavailable, open_state_db
    from rag_sft.io.state.training_ledger import TrainingLedger
    from rag_sft.resources import resolved

    url = resolved(warehouse.state_url) or ""
    if not is_postgres_url(url):
        raise StateUnavailable("RAG_SFT_STATE_URL (warehouse.state_url) names no PostgreSQL database to import into")
    imported = {}
    for store in (RequestIndex, NearDuplicateIndex, ErasureLedger, TrainingLedger):
        local = warehouse.state_dir() / store.FILE
        if not local.exists():
            continue
        with store(open_state_db(url, local)) as opened:
            imported[store.FILE] = opened.import_file(local)
        for part in (local, local.with_name(f"{local.name}-wal"), local.with_name(f"{local.name}-shm")):
            if part.exists():
                part.rename(part.with_name(f"{part.name}.imported"))
    return imported


def cmd_state_import(args: argparse.Namespace) -> int:
    from rag_sft.definitions import defs
    from rag_sft.io.state.state_db import StateUnavailable

    try:
        imported = import_local_state(defs.resources["warehouse"])
    except StateUnavailable as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(json.dumps(imported))
    return 0


def cmd_state_rebuild(args: argparse.Namespace) -> int:
    import dagster as dg

    from rag_sft.cli.versions import params_run_config
    from rag_sft.definitions import defs
    from rag_sft.lost_state import rebuild_state

    ensure_dagster_home()
    configured = params_run_config(args.params, "export").get("resources", {})
    warehouse, sft_rules = (
        type(defs.resources[name])(**configured[name]["config"]) if name in configured else defs.resources[name]
        for name in ("warehouse", "sft_rules")
    )
    with dg.DagsterInstance.get() as instance:
        report = rebuild_state(instance, warehouse, sft_rules)
    print(json.dumps(report))
    return 0


def add_parser(sub) -> None:
    state_import = sub.add_parser(
        "state-import", help="copy this machine's shared-truth SQLite files into the state database"
    )
    state_import.set_defaults(func=cmd_state_import)
    state = sub.add_parser("state", help="the pipeline's shared truth (request and near-duplicate indexes, ledgers)")
    actions = state.add_subparsers(dest="state_action", required=True)
    rebuild = actions.add_parser(
        "rebuild",
        help="rebuild the erasure ledger and the request and near-duplicate indexes from the instance's erase runs "
        "and the warehouse's exported partitions (after the state folder was lost; while no day is running)",
    )
    rebuild.add_argument("--params", default="", help="params.yaml: its export.resources settings (DVC)")
    rebuild.set_defaults(func=cmd_state_rebuild)
