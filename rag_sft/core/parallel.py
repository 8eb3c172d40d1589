"""An ordered, bounded process map: the CPU-bound part of a large day spread over the cores.

Results come back in input order and at most a few items per worker are in flight, so memory
stays bounded however large the day is. The pool starts only when there is a second item, so
small days never pay for starting processes.
"""

from __future__ import annotations

import gc
import multiprocessing
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from itertools import chain
from typing import Any, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")

IN_FLIGHT_PER_WORKER = 2
# fork where there is one: workers start in milliseconds and never re-import the parent's main
# module (a Dagster or pytest entry point); they only run pure functions over their inputs.
_START_METHOD = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


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
            max_workers=workers, mp_context=context, initializer=_worker_setup, initargs=(process_setup,)
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


def _worker_setup(process_setup: Callable[[], Any] | None) -> None:
    if process_setup is not None:
        process_setup()
    gc.freeze()  # the heap inherited from the parent is never garbage: keep collections off it
