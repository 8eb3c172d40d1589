"""`make bench`: one day of realistic events through every asset, timed, with peak memory.

The pipeline runs in a child process on a fresh Dagster instance so its peak RSS is its own
(not the generator's); the last line printed is `events_per_s=<N> peak_rss_mib=<M>`.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rag_sft.core.generator import GeneratorSettings, recent_days


def run_bench(events: int, workdir: Path | None, keep: bool, data_dir: str | None = None) -> int:
    """`data_dir`: where the warehouse goes (a folder or an object store URI; default <workdir>/data);
    the pipeline's local state is in <workdir>/state either way."""
    from rag_sft.cli.main import write_days

    root = workdir or Path(tempfile.mkdtemp(prefix="rag_sft_bench_"))
    landing = root / "landing"
    day = recent_days(1)[0]
    try:
        expected = landing / f"events-{day.isoformat()}.jsonl"
        if not expected.exists():
            shutil.rmtree(landing, ignore_errors=True)
            started = time.perf_counter()
            write_days(landing, [day], GeneratorSettings(events_per_day=events, malformed_share=0.001, duplicate_share=0.001))
            print(f"generated {events} events ({expected.stat().st_size / 2**30:.2f} GiB) "
                  f"in {time.perf_counter() - started:.1f}s", flush=True)
        env = dict(os.environ)
        env.update(
            RAG_SFT_LANDING_DIR=str(landing),
            RAG_SFT_DATA_DIR=data_dir or str(root / "data"),
            RAG_SFT_STATE_DIR=str(root / "state"),
            RAG_SFT_SOURCE="landing",
            DAGSTER_HOME=str(root / "dagster_home"),
        )
        started = time.perf_counter()
        child = subprocess.run(
            [sys.executable, "-m", "rag_sft.cli.bench", day.isoformat()], env=env, capture_output=True, text=True, check=False
        )
        wall = time.perf_counter() - started
        peak_rss_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        if child.returncode != 0:
            print(child.stdout, child.stderr, sep="\n", file=sys.stderr)
            return 1
        result = json.loads(child.stdout.strip().splitlines()[-1])
        run_s = result["run_seconds"]
        print(f"run: {run_s:.1f}s for {result['events_read']} events "
              f"(process with Python and Dagster start-up: {wall:.1f}s)")
        print(f"counts: {json.dumps(result['counts'])}")
        print(f"events_per_s={result['events_read'] / run_s:.0f} peak_rss_mib={peak_rss_mib:.0f}")
        return 0
    finally:
        if workdir is None and not keep:
            shutil.rmtree(root, ignore_errors=True)


def _child(day: str) -> None:
    import dagster as dg

    from rag_sft.cli.main import ensure_dagster_home
    from rag_sft.cli.runner import materialize_day
    from rag_sft.definitions import DAILY_JOB, defs

    ensure_dagster_home()  # DAGSTER_HOME is the bench's own, from the environment
    instance = dg.DagsterInstance.get()
    job = defs.resolve_job_def(DAILY_JOB)
    started = time.perf_counter()
    report = materialize_day(job, day, instance)
    run_seconds = time.perf_counter() - started
    if not report.success:
        raise SystemExit(f"bench run failed: {report.failure}")
    print(json.dumps({"run_seconds": run_seconds, "events_read": report.counts["events_read"], "counts": report.counts}))


if __name__ == "__main__":
    _child(sys.argv[1])
