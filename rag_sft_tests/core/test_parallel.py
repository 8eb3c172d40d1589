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

# A module of slow items (workers import the mapped function by name, as the stages' are).
SLOW_ITEMS = """
import os, time
from pathlib import Path

def slow(item, folder):
    Path(folder, str(os.getpid())).touch()
    time.sleep(120)
    return item
"""
# Starts ordered_map over slow items in 2 worker processes; each worker writes its pid, then waits.
# (Guarded as every entry point is: forkserver workers import the main module.)
SLOW_MAP = """
import sys
sys.path.insert(0, sys.argv[2])
from rag_sft.core.parallel import ordered_map
from slow_items import slow

if __name__ == "__main__":
    for _ in ordered_map(slow, range(8), 2, sys.argv[1]):
        pass
"""


def alive(pid: int) -> bool:
    """Running, or stopped, but not a zombie waiting for a reaper."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):  # gone, also between opening and reading its stat
        return False


def parent_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="pidfd_open is Linux's")
def test_workers_die_when_the_run_process_is_killed(tmp_path):
    pids, code = tmp_path / "pids", tmp_path / "code"
    pids.mkdir(), code.mkdir()
    (code / "slow_items.py").write_text(SLOW_ITEMS)
    (code / "slow_map.py").write_text(SLOW_MAP)
    parent = subprocess.Popen([sys.executable, str(code / "slow_map.py"), str(pids), str(code)])
    try:
        deadline = time.monotonic() + 60
        while len(list(pids.iterdir())) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        workers = [int(path.name) for path in pids.iterdir()]
        assert len(workers) == 2 and all(alive(pid) for pid in workers)
        # Not forked from the (threaded) run process: from a forkserver.
        assert all(parent_of(pid) != parent.pid for pid in workers)
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


def variable(name: str, _) -> str | None:
    return os.environ.get(name)


def test_workers_see_the_environment_of_the_process_that_starts_their_pool(monkeypatch):
    """The forkserver is started once, with the environment of that moment; a variable set later
    (the AWS ones a worker opens objects with) still reaches the workers."""
    list(parallel.ordered_map(variable, ["HOME", "HOME"], 2, None))  # the server is up
    monkeypatch.setenv("RAG_SFT_TEST_LATE_VARIABLE", "set after the server started")
    found = [value for _, value in parallel.ordered_map(variable, ["RAG_SFT_TEST_LATE_VARIABLE"] * 2, 2, None)]
    assert found == ["set after the server started"] * 2


def marked_processes(marker: str) -> list[int]:
    """Live processes whose environment holds `marker` (a NAME=value entry)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker.encode() in (entry / "environ").read_bytes().split(b"\0") and alive(int(entry.name)):
                    found.append(int(entry.name))
            except OSError:
                pass
    return found


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="pidfd_open is Linux's")
@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM, "group SIGTERM"])
def test_no_helper_process_outlives_the_process_that_started_the_pool(tmp_path, how):
    """Not only the workers: the forkserver and multiprocessing's resource tracker end with the
    process that started the pool too, whether it is killed alone or with its process group (as
    stopping `dagster dev` does), within seconds."""
    pids, code = tmp_path / "pids", tmp_path / "code"
    pids.mkdir(), code.mkdir()
    (code / "slow_items.py").write_text(SLOW_ITEMS)
    (code / "slow_map.py").write_text(SLOW_MAP)
    marker = f"RAG_SFT_POOL_TEST={tmp_path.name}"
    env = {**os.environ, "RAG_SFT_POOL_TEST": tmp_path.name}
    parent = subprocess.Popen([sys.executable, str(code / "slow_map.py"), str(pids), str(code)], env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while len(list(pids.iterdir())) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        helpers = [pid for pid in marked_processes(marker) if pid != parent.pid]
        commands = [Path(f"/proc/{pid}/cmdline").read_bytes() for pid in helpers]
        # Two workers, the forkserver and the resource tracker.
        assert sum(b"forkserver" in command for command in commands) == 3, commands
        assert sum(b"resource_tracker" in command for command in commands) == 1, commands
    finally:
        if how == "group SIGTERM":
            os.killpg(parent.pid, signal.SIGTERM)
        else:
            parent.send_signal(how)
        parent.wait()
    deadline = time.monotonic() + 10
    while marked_processes(marker) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = marked_processes(marker)
    try:
        assert left == [], [Path(f"/proc/{pid}/cmdline").read_bytes() for pid in left]
    finally:
        for pid in left:
            os.kill(pid, signal.SIGKILL)
