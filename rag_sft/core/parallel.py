"""An ordered, bounded process map: the CPU-bound part of a large day spread over the cores.

Results come back in input order and at most a few items per worker are in flight, so memory
stays bounded however large the day is. The pool starts only when there is a second item, so
small days never pay for starting processes.
"""

from __future__ import annotations

import gc
import math
import multiprocessing
import os
import select
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from itertools import chain
from pathlib import Path
from typing import Any, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")

IN_FLIGHT_PER_WORKER = 2
# Workers are forked from a forkserver, never from the run process: the run process has threads
# (Dagster's, Arrow's pools, the stages' own) and a fork copies any lock one of them holds at
# that instant, so a forked worker can hang for ever on it. The server is a fresh single-threaded
# interpreter (one per run process, started on first use); it imports the heavy libraries once,
# so each worker still starts in milliseconds.
_START_METHOD = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
_SERVER_PRELOAD = ["pyarrow", "pyarrow.compute", "msgspec", "orjson"]
CGROUP_ROOT = Path("/sys/fs/cgroup")


def available_cores(cgroup_root: Path = CGROUP_ROOT) -> int:
    """The cores this process may use: its CPU affinity, capped by a cgroup CPU quota (a
    container's --cpus), which the affinity does not show."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    quota = cgroup_cpu_quota(cgroup_root)
    return max(1, min(cores, math.ceil(quota))) if quota else cores


def cgroup_cpu_quota(cgroup_root: Path = CGROUP_ROOT) -> float | None:
    """CPUs' worth of time per period the cgroup allows (cgroup v2 `cpu.max`, else v1
    `cpu.cfs_quota_us` / `cpu.cfs_period_us`); None when there is no quota or no such file."""
    try:
        quota, period = (cgroup_root / "cpu.max").read_text().split()
    except (OSError, ValueError):
        v1 = cgroup_root / "cpu"
        try:
            quota, period = (v1 / "cpu.cfs_quota_us").read_text().strip(), (v1 / "cpu.cfs_period_us").read_text().strip()
        except OSError:
            return None
    if quota in ("max", "-1") or int(period) <= 0:
        return None
    return int(quota) / int(period)


def resolve_workers(workers: int) -> int:
    """0 means one worker per available core."""
    if workers < 0:
        raise ValueError(f"workers must be 0 (one per core) or more, got {workers}")
    return workers or available_cores()


def ordered_map(
    function: Callable[..., Result],
    items: Iterable[Item],
    workers: int,
    *args: Any,
    threads: bool = False,
    process_setup: Callable[[], Any] | None = None,
) -> Iterator[tuple[Item, Result]]:
    """(item, function(item, *args)) for every item, in order.

    Processes by default (`function` and items must pickle; `process_setup` runs once in each);
    `threads=True` for functions that spend their time in Arrow, which releases the GIL.
    """
    iterator = iter(items)
    head = [item for item in (next(iterator, None), next(iterator, None)) if item is not None]
    if workers <= 1 or len(head) < 2:
        for item in chain(head, iterator):
            yield item, function(item, *args)
        return

    pool: Executor
    if threads:
        pool = ThreadPoolExecutor(max_workers=workers)
    else:
        pool = ProcessPoolExecutor(
            max_workers=workers,
            mp_context=_process_context(function),
            initializer=_worker_setup,
            initargs=(process_setup, os.getpid(), dict(os.environ)),
        )
    with pool:
        pending: deque[tuple[Item, Future]] = deque()
        for item in chain(head, iterator):
            pending.append((item, pool.submit(function, item, *args)))
            if len(pending) >= workers * IN_FLIGHT_PER_WORKER:
                done_item, future = pending.popleft()
                yield done_item, future.result()
        while pending:
            done_item, future = pending.popleft()
            yield done_item, future.result()


def _process_context(function: Callable) -> multiprocessing.context.BaseContext:
    context = multiprocessing.get_context(_START_METHOD)
    if _START_METHOD == "forkserver":
        # Takes effect when the server starts (the first pool of the process): the first mapped
        # function's module is imported there too; later ones are imported by their workers.
        context.set_forkserver_preload([*_SERVER_PRELOAD, *[function.__module__][: function.__module__ != "__main__"]])
    return context


def _worker_setup(process_setup: Callable[[], Any] | None, run_pid: int, environment: dict[str, str]) -> None:
    # A forkserver's workers inherit the server's environment, as it was when the server started;
    # they take the run process's as it is now (the AWS variables a worker opens objects with).
    os.environ.clear()
    os.environ.update(environment)
    exit_with(run_pid)
    if process_setup is not None:
        process_setup()
    gc.freeze()  # the heap inherited from the server (its imports) is never garbage: keep collections off it


def exit_with(run_pid: int) -> None:
    """End this worker as soon as the run process ends: a worker of a run process killed with
    kill -9 would otherwise wait on its task queue (or finish its task) holding its memory.

    A thread waits on a pidfd of the run process. (PR_SET_PDEATHSIG cannot do it: the worker's
    parent is the forkserver, which stays up while any worker does.)
    """
    if not hasattr(os, "pidfd_open"):  # not Linux: the pool's own shutdown is all there is
        return
    try:
        pidfd = os.pidfd_open(run_pid)
    except ProcessLookupError:  # already gone
        os._exit(1)
    threading.Thread(target=_exit_when_ready, args=(pidfd,), daemon=True, name="exit-with-run-process").start()


def _exit_when_ready(pidfd: int) -> None:
    select.select([pidfd], [], [])  # readable once the process has exited
    os._exit(1)
