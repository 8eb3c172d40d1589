"""A throwaway PostgreSQL server from the binaries the `pgserver` wheel ships (initdb, pg_ctl).

For the tests of the production setup: a fresh cluster in a temporary folder, listening only
on 127.0.0.1 on a free port, with a password (scram-sha-256), stopped and deleted afterwards.
The wheel is a dev dependency, so `make test` brings the server with it (no apt-get); only
where it is missing are the machine's own binaries used. PostgreSQL refuses to run as root, so
as root the server runs as an unprivileged account: `postgres` where a package created it,
else `nobody`, which every Linux has.
"""

from __future__ import annotations

import glob
import hashlib
import importlib.util
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from rag_sft import settings


class PostgresUnavailable(RuntimeError):
    pass


def wheel_binaries() -> Path | None:
    """pgserver's bundled server (pgserver/pginstall/bin), found without importing the package
    (its import registers atexit hooks for servers of its own)."""
    spec = importlib.util.find_spec("pgserver")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    return folder if (folder / "initdb").exists() and (folder / "pg_ctl").exists() else None


def find_binaries() -> Path:
    """The folder holding initdb and pg_ctl: the pgserver wheel's, else on PATH, else Debian's
    /usr/lib/postgresql/<v>/bin."""
    from_wheel = wheel_binaries()
    if from_wheel:
        return from_wheel
    on_path = shutil.which("initdb")
    if on_path and shutil.which("pg_ctl"):
        return Path(os.path.realpath(on_path)).parent
    for folder in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if (Path(folder) / "initdb").exists() and (Path(folder) / "pg_ctl").exists():
            return Path(folder)
    raise PostgresUnavailable(
        "PostgreSQL server binaries (initdb, pg_ctl) not found: `make test` installs them with the "
        "pgserver wheel (the dev extra); else install the machine's, e.g. `apt-get install postgresql`"
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
    _account: pwd.struct_passwd | None

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg2://{self.user}:{self.password}@{self.host}:{self.port}/{database}"

    def env(self, database: str) -> dict[str, str]:
        """The variables the documented dagster.yaml (deploy/dagster-postgres.yaml) reads."""
        return {
            settings.PG_HOST.variable: self.host,
            settings.PG_PORT.variable: str(self.port),
            settings.PG_USER.variable: self.user,
            settings.PG_PASSWORD.variable: self.password,
            settings.PG_DB.variable: database,
        }

    def create_database(self, name: str) -> str:
        import sqlalchemy as sa

        engine = sa.create_engine(self.url(), isolation_level="AUTOCOMMIT")
        with engine.connect() as connection:
            connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
        engine.dispose()
        return name

    def stop(self) -> None:
        _run([str(self._bin / "pg_ctl"), "-D", str(self.root / "data"), "-m", "immediate", "-w", "stop"], self._account)
        shutil.rmtree(self.root, ignore_errors=True)


def server_account() -> pwd.struct_passwd:
    """The unprivileged account the server runs as when the tests run as root."""
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise PostgresUnavailable("running as root and there is neither a `postgres` nor a `nobody` account to run the server")


def _run(command: list[str], account: pwd.struct_passwd | None) -> subprocess.CompletedProcess:
    """The command, as `account` when given (dropping root without needing runuser or sudo)."""
    as_account = {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []} if account else {}
    return subprocess.run(command, capture_output=True, text=True, check=False, **as_account)


def reachable_binaries(binaries: Path, account: pwd.struct_passwd | None) -> Path:
    """The binaries where `account` can run them: where they are, or else a copy, made once in
    the shared temporary folder, of the wheel's installation and the libraries it links
    (`$ORIGIN/../../../pgserver.libs`: the copy keeps the layout under site-packages). A project
    checked out under a private folder (0700, as `mktemp -d` makes) keeps its .venv, and the
    wheel's binaries, out of the server account's reach."""
    if account is None:
        return binaries
    try:
        _run([str(binaries / "pg_ctl"), "--version"], account)
        return binaries
    except PermissionError:
        pass
    site = binaries.parents[2]  # site-packages/pgserver/pginstall/bin
    parts = [binaries.parent.relative_to(site), *(Path(libs.name) for libs in site.glob("pgserver*.libs"))]
    copy = Path(tempfile.gettempdir()) / f"rag_sft_pginstall_{hashlib.sha256(str(site).encode()).hexdigest()[:12]}"
    if not copy.is_dir():
        staged = Path(tempfile.mkdtemp(prefix="rag_sft_pginstall_"))
        os.chmod(staged, 0o755)
        for part in parts:
            shutil.copytree(site / part, staged / part)  # modes too: readable and runnable by all
            for folder in (staged / part).parents:  # the folders made on the way: traversable
                if folder == staged:
                    break
                os.chmod(folder, 0o755)
        try:
            staged.rename(copy)
        except OSError:  # another test process made it meanwhile
            shutil.rmtree(staged, ignore_errors=True)
    return copy / binaries.relative_to(site)


def start_postgres(user: str = "rag_sft", password: str = "rag-sft-test-pw") -> PostgresServer:
    account = server_account() if os.geteuid() == 0 else None
    binaries = reachable_binaries(find_binaries(), account)
    # Not under pytest's own (0700) temp folders: the server user must reach its data.
    root = Path(tempfile.mkdtemp(prefix="rag_sft_pg_"))
    password_file = root / "pw"
    password_file.write_text(password)
    if account:
        for owned in (root, password_file):
            os.chown(owned, account.pw_uid, account.pw_gid)
    port = free_port()
    data = root / "data"
    steps = [
        [str(binaries / "initdb"), "-D", str(data), "-U", user, f"--pwfile={password_file}",
         "--auth=scram-sha-256", "-E", "UTF8", "--locale=C.UTF-8"],
        [str(binaries / "pg_ctl"), "-D", str(data), "-l", str(root / "server.log"), "-w", "-t", "60", "-o",
         f"-h 127.0.0.1 -p {port} -k {root} -c max_connections=200 -c fsync=off", "start"],
    ]  # fmt: skip
    for step in steps:
        done = _run(step, account)
        if done.returncode != 0:
            log = (root / "server.log").read_text() if (root / "server.log").exists() else ""
            shutil.rmtree(root, ignore_errors=True)
            raise PostgresUnavailable(f"{Path(step[0]).name} failed: {done.stderr.strip()} {log[-2000:]}")
    password_file.unlink()
    return PostgresServer("127.0.0.1", port, user, password, root, binaries, account)
