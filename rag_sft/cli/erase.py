"""`rag-sft erase --request-id ID … | --from-file ids.txt [--dvc]`: the erase_requests job on the
project's instance, then, with `--dvc`, the DVC cache and remote made to forget the old files."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from rag_sft.cli.home import ensure_dagster_home

# What DVC must run so that its cache and its default remote hold only what the workspace uses:
# record the rewritten outputs' hashes in dvc.lock (caching the new files), push them, then
# collect every object the workspace no longer references, locally and in the remote.
DVC_STEPS = (("commit", "--force"), ("push",), ("gc", "--workspace", "--cloud", "--force"))


def read_ids(args: argparse.Namespace) -> list[str]:
    """The ids of `--request-id` and of `--from-file` (one per line; blank lines and # comments
    skipped). The file may start with a byte order mark and end its lines with CRLF (Windows
    editors, Excel's "UTF-8 CSV"): neither is part of the first or any id."""
    ids = list(args.request_id or [])
    if args.from_file:
        lines = (line.strip() for line in Path(args.from_file).read_text(encoding="utf-8-sig").splitlines())
        ids += [line for line in lines if line and not line.startswith("#")]
    return ids


def cmd_erase(args: argparse.Namespace) -> int:
    from rag_sft.core.erasure import request_ids

    ids = request_ids(read_ids(args))
    if not ids:
        print("error: no request_id given (--request-id ID or --from-file ids.txt)", file=sys.stderr)
        return 2
    import dagster as dg

    from rag_sft.cli.runner import QUIET_RUN_CONFIG, process_tags, step_failure_messages
    from rag_sft.definitions import defs
    from rag_sft.erasure_job import ERASE_JOB, ERASE_OP

    ensure_dagster_home()
    started = time.perf_counter()
    result = defs.resolve_job_def(ERASE_JOB).execute_in_process(
        run_config={**QUIET_RUN_CONFIG, "ops": {ERASE_OP: {"config": {"request_ids": ids}}}},
        instance=dg.DagsterInstance.get(),
        raise_on_error=False,
        tags=process_tags(),
    )
    if not result.success:
        print(f"error: erasure failed: {'; '.join(step_failure_messages(result)) or 'run failed'}", file=sys.stderr)
        return 1
    report = result.output_for_node(ERASE_OP)
    erased_at = time.perf_counter()
    print(json.dumps(report, indent=2))
    if report["models_trained_on_erased"]:
        print(
            "model versions trained on erased events (flagged trained_on_erased in the registry; retraining is "
            "your choice): " + ", ".join(f"{v} ({n} records)" for v, n in report["models_trained_on_erased"].items())
        )
    if args.dvc:
        from rag_sft import settings

        project_dvc = Path(".venv-dvc/bin/dvc")  # `make dvc`'s environment, else dvc on the PATH
        dvc = settings.DVC.raw() or (str(project_dvc.absolute()) if project_dvc.exists() else "dvc")
        for step in DVC_STEPS:
            done = subprocess.run([dvc, *step], capture_output=True, text=True, check=False)
            if done.returncode:
                print(
                    f"error: dvc {' '.join(step)} failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}", file=sys.stderr
                )
                return 1
        print(
            "DVC: new hashes in dvc.lock, pushed, and the old files collected from .dvc/cache and the default "
            "remote; commit dvc.lock (git) now. Older git commits still name the old hashes: their data is gone."
        )
    dvc_time = f" + DVC {time.perf_counter() - erased_at:.1f} s" if args.dvc else ""
    print(f"erase took {erased_at - started:.1f} s{dvc_time}")
    return 0


def add_parser(sub) -> None:
    erase = sub.add_parser(
        "erase", help="erase requests' events from every derived artefact (docs/spec.md, 'Rule 14: Privacy')")
    erase.add_argument("--request-id", action="append", help="a request_id to erase (repeatable)")
    erase.add_argument("--from-file", help="a file of request_ids, one per line")
    erase.add_argument("--dvc", action="store_true",
                       help="then dvc commit, push and gc --workspace --cloud: the cache and remote forget the old files")  # fmt: skip
    erase.set_defaults(func=cmd_erase)
