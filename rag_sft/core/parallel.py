"""An ordered, bounded process map: the CPU-bound part of a large day spread over the cores.

Results come back in input order and at most a few items per worker are in flight, so memory
stays bounded however large the day is. The pool starts only when there is a second item, so
small days never pay for starting processes.
"""

from __future__ import annotations

import ctypes
import gc
import math
import multiprocessing
import os
import signal
import sys
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from itertools import chain
from pathlib import Path
from typing import Any, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")

IN_FLIGHT_PER_WORKER = 2
# fork where there is one: workers start in milliseconds and never re-import the parent's main
# module (a Dagster or pytest entry point); they only run pure functions over their inputs.
_START_METHOD = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
CGROUP_ROOT = Path("/sys/fs/cgroup")
_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


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
        context = multiprocessing.get_context(_START_METHOD)
        pool = ProcessPoolExecutor(
            max_workers=workers, mp_context=context, initializer=_worker_setup, initargs=(process_setup, os.getpid())
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


def _worker_setup(process_setup: Callable[[], Any] | None, parent_pid: int) -> None:
    die_with_parent(parent_pid)
    if process_setup is not None:
        process_setup()
    gc.freeze()  # the heap inherited from the parent is never garbage: keep collections off it


def die_with_parent(parent_pid: int) -> None:
    """Have Linux SIGKILL this process when its parent dies: a worker of a run process killed
    with kill -9 would otherwise wait on its task queue forever, holding its memory.

    (Linux sends the signal when the parent *thread* that forked this process ends: the pool's
    workers are forked by the thread that first submits to it, which consumes the results.)
    """
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != parent_pid:  # the parent died before the request took effect
        os._exit(1)
