"""`make bench`: one day of realistic events through every asset, timed, with peak memory.

The pipeline runs in a child process on a fresh Dagster instance so its peak RSS is its own
(not the generator's); the last line printed is `events_per_s=<N> peak_rss_mib=<M>`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rag_sft.cli.generate import write_days
from rag_sft.cli.home import ensure_dagster_home
from rag_sft.core.generator import GeneratorSettings, recent_days


def run_bench(
    events: int, workdir: Path | None, keep: bool, data_dir: str | None = None, many_files: int = 0
) -> int:
    """`data_dir`: where the warehouse goes (a folder or an object store URI; default <workdir>/data);
    the pipeline's local state is in <workdir>/state either way. `many_files`: also run the same
    events split into that many files (a shipper that writes one small file per batch)."""
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
        single = _run_day(day.isoformat(), landing, root / "one-file", data_dir)
        if single is None:
            return 1
        if many_files > 1:
            split = root / f"landing-{many_files}-files"
            if not split.exists():
                _split_lines(expected, split, many_files)
            many = _run_day(day.isoformat(), split, root / "many-files", f"{data_dir}-many" if data_dir else None)
            if many is None:
                return 1
            print(f"many_files={many_files} events_per_s={many[0]:.0f} peak_rss_mib={many[1]:.0f} "
                  f"(one file: {single[0]:.0f} events/s)")
        print(f"events_per_s={single[0]:.0f} peak_rss_mib={single[1]:.0f}")
        return 0
    finally:
        if workdir is None and not keep:
            shutil.rmtree(root, ignore_errors=True)


def _split_lines(source: Path, folder: Path, parts: int) -> None:
    """The file's lines dealt into `parts` files of consecutive lines, as a shipper writes them."""
    with source.open("rb") as handle:
        lines = handle.readlines()
    folder.mkdir(parents=True)
    per_file = max(1, -(-len(lines) // parts))
    for number, start in enumerate(range(0, len(lines), per_file)):
        (folder / f"part-{number:06d}.jsonl").write_bytes(b"".join(lines[start : start + per_file]))


def _run_day(day: str, landing: Path, work: Path, data_dir: str | None) -> tuple[float, float] | None:
    """(events per second, peak RSS MiB of the run's process) of the day through every asset on
    a fresh instance, in a child process so its memory is its own."""
    env = dict(os.environ)
    env.update(
        RAG_SFT_LANDING_DIR=str(landing),
        RAG_SFT_DATA_DIR=data_dir or str(work / "data"),
        RAG_SFT_STATE_DIR=str(work / "state"),
        RAG_SFT_SOURCE="landing",
        DAGSTER_HOME=str(work / "dagster_home"),
    )
    started = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        child = subprocess.Popen([sys.executable, "-m", "rag_sft.cli.bench", day], env=env, stdout=out, stderr=err)
        _, status, usage = os.wait4(child.pid, 0)  # this child's own peak RSS, not the largest child's
        wall = time.perf_counter() - started
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    peak_rss_mib = usage.ru_maxrss / 1024
    if os.waitstatus_to_exitcode(status) != 0:
        print(stdout, stderr, sep="\n", file=sys.stderr)
        return None
    result = json.loads(stdout.strip().splitlines()[-1])
    run_s = result["run_seconds"]
    print(f"{landing.name}: {run_s:.1f}s for {result['events_read']} events "
          f"(process with Python and Dagster start-up: {wall:.1f}s)")
    print(f"counts: {json.dumps(result['counts'])}", flush=True)
    return result["events_read"] / run_s, peak_rss_mib


def _child(day: str) -> None:
    import dagster as dg

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
