"""A throwaway PostgreSQL server from the machine's own binaries (initdb, pg_ctl).

For the tests of the production setup: a fresh cluster in a temporary folder, listening only
on 127.0.0.1 on a free port, with a password (scram-sha-256), stopped and deleted afterwards.
PostgreSQL refuses to run as root, so as root the server runs as the `postgres` user that
Debian's package creates.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path


class PostgresUnavailable(RuntimeError):
    pass


def find_binaries() -> Path:
    """The folder holding initdb and pg_ctl: on PATH, else Debian's /usr/lib/postgresql/<v>/bin."""
    on_path = shutil.which("initdb")
    if on_path and shutil.which("pg_ctl"):
        return Path(os.path.realpath(on_path)).parent
    for folder in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if (Path(folder) / "initdb").exists() and (Path(folder) / "pg_ctl").exists():
            return Path(folder)
    raise PostgresUnavailable(
        "PostgreSQL server binaries (initdb, pg_ctl) not found: install them, e.g. "
        "`apt-get install postgresql` (.ci/run does)"
    )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class PostgresServer:
    host: str
    port: int
    user: str
    password: str
    root: Path
    _bin: Path
    _run_as: list[str]

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg2://{self.user}:{self.password}@{self.host}:{self.port}/{database}"

    def env(self, database: str) -> dict[str, str]:
        """The variables the documented dagster.yaml (deploy/dagster-postgres.yaml) reads."""
        return {
            "RAG_SFT_PG_HOST": self.host,
            "RAG_SFT_PG_PORT": str(self.port),
            "RAG_SFT_PG_USER": self.user,
            "RAG_SFT_PG_PASSWORD": self.password,
            "RAG_SFT_PG_DB": database,
        }

    def create_database(self, name: str) -> str:
        import sqlalchemy as sa

        engine = sa.create_engine(self.url(), isolation_level="AUTOCOMMIT")
        with engine.connect() as connection:
            connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
        engine.dispose()
        return name

    def stop(self) -> None:
        subprocess.run(
            [*self._run_as, str(self._bin / "pg_ctl"), "-D", str(self.root / "data"), "-m", "immediate", "-w", "stop"],
            capture_output=True,
            check=False,
        )
        shutil.rmtree(self.root, ignore_errors=True)


def start_postgres(user: str = "rag_sft", password: str = "rag-sft-test-pw") -> PostgresServer:
    binaries = find_binaries()
    # Not under pytest's own (0700) temp folders: the server user must reach its data.
    root = Path(tempfile.mkdtemp(prefix="rag_sft_pg_"))
    run_as: list[str] = []
    if os.geteuid() == 0:
        try:
            account = pwd.getpwnam("postgres")
        except KeyError:
            raise PostgresUnavailable("running as root and there is no `postgres` user to run the server") from None
        os.chown(root, account.pw_uid, account.pw_gid)
        run_as = ["runuser", "-u", "postgres", "--"]
    password_file = root / "pw"
    password_file.write_text(password)
    if run_as:
        os.chown(password_file, account.pw_uid, account.pw_gid)
    port = free_port()
    data = root / "data"
    steps = [
        [str(binaries / "initdb"), "-D", str(data), "-U", user, f"--pwfile={password_file}",
         "--auth=scram-sha-256", "-E", "UTF8", "--locale=C.UTF-8"],
        [str(binaries / "pg_ctl"), "-D", str(data), "-l", str(root / "server.log"), "-w", "-t", "60", "-o",
         f"-h 127.0.0.1 -p {port} -k {root} -c max_connections=200 -c fsync=off", "start"],
    ]  # fmt: skip
    for step in steps:
        done = subprocess.run([*run_as, *step], capture_output=True, text=True, check=False)
        if done.returncode != 0:
            log = (root / "server.log").read_text() if (root / "server.log").exists() else ""
            shutil.rmtree(root, ignore_errors=True)
            raise PostgresUnavailable(f"{Path(step[0]).name} failed: {done.stderr.strip()} {log[-2000:]}")
    password_file.unlink()
    return PostgresServer("127.0.0.1", port, user, password, root, binaries, run_as)
