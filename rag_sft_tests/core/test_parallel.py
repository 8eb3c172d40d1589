"""The ordered process map: workers die with the run process, and the worker count follows a
container's CPU quota."""

import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rag_sft.core import parallel

# Starts ordered_map over slow items in 2 worker processes; each worker writes its pid, then waits.
SLOW_MAP = """
import os, sys, time
from pathlib import Path
from rag_sft.core.parallel import ordered_map

def slow(item, folder):
    Path(folder, str(os.getpid())).touch()
    time.sleep(120)
    return item

for _ in ordered_map(slow, range(8), 2, sys.argv[1]):
    pass
"""


def alive(pid: int) -> bool:
    """Running, or stopped, but not a zombie waiting for a reaper."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_workers_die_when_the_run_process_is_killed(tmp_path):
    parent = subprocess.Popen([sys.executable, "-c", SLOW_MAP, str(tmp_path)])
    try:
        deadline = time.monotonic() + 60
        while len(list(tmp_path.iterdir())) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        workers = [int(path.name) for path in tmp_path.iterdir()]
        assert len(workers) == 2 and all(alive(pid) for pid in workers)
    finally:
        parent.send_signal(signal.SIGKILL)
        parent.wait()
    deadline = time.monotonic() + 5
    while any(alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    try:
        assert not any(alive(pid) for pid in workers)
    finally:
        for pid in filter(alive, workers):
            os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize(
    ("files", "quota"),
    [
        ({"cpu.max": "max 100000\n"}, None),
        ({"cpu.max": "150000 100000\n"}, 1.5),
        ({"cpu.max": "50000 100000\n"}, 0.5),
        ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),
        ({"cpu/cpu.cfs_quota_us": "100000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 1.0),
        ({}, None),
    ],
)
def test_the_cgroup_cpu_quota_caps_the_worker_count(tmp_path, files, quota):
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert parallel.cgroup_cpu_quota(tmp_path) == quota
    cores = len(os.sched_getaffinity(0))
    expected = cores if quota is None else max(1, min(cores, math.ceil(quota)))
    assert parallel.available_cores(tmp_path) == expected


def test_a_quota_below_the_affinity_is_what_counts(tmp_path):
    (tmp_path / "cpu.max").write_text("100000 100000\n")
    assert parallel.available_cores(tmp_path) == 1
