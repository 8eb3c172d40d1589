"""`rag-sft model`: list, promote and roll back with reasons; concurrent registry updates."""

import os
import subprocess
import sys
import threading

import pytest

from rag_sft.cli.main import main
from rag_sft.io.registry.model_registry import ModelRegistry


def test_promote_and_rollback_by_hand_record_their_reasons(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RAG_SFT_DATA_DIR", str(tmp_path))
    registry = ModelRegistry(tmp_path / "models")
    for version in ("v0001", "v0002", "v0003"):
        (registry.root / version).mkdir(parents=True)  # its folder, published before its entry
        registry.register(version, dataset_version="v001")
    registry.promote("v0001", "gate")
    registry.reject("v0002", "gate: worse")
    assert main(["model", "promote", "v0003", "--reason", "canary looked fine"]) == 0
    assert registry.current() == "v0003"
    assert main(["model", "list"]) == 0
    listing = capsys.readouterr().out
    assert "* v0003    promoted" in listing and "rejected" in listing and "in use: v0003" in listing

    assert main(["model", "rollback", "--reason", "complaints"]) == 0
    assert registry.current() == "v0001"  # the previous version in use, not the rejected one
    assert registry.get("v0003")["status"] == "rolled_back"
    assert registry.get("v0003")["reason"] == "rolled back by hand: complaints"
    assert [h["action"] for h in registry.history()] == ["promote", "promote", "rollback"]
    assert main(["model", "rollback", "--reason", "again"]) == 0 and registry.current() is None
    assert main(["model", "rollback", "--reason", "nothing left"]) == 2
    assert main(["model", "promote", "v0009", "--reason", "typo"]) == 2


def test_concurrent_registry_updates_lose_nothing(tmp_path):
    registry = ModelRegistry(tmp_path / "models")

    def register(worker):
        for n in range(15):
            registry.register(f"v{worker}{n:03d}", worker=worker)

    threads = [threading.Thread(target=register, args=(w,)) for w in range(1, 7)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(registry.versions()) == 90


def model_cli(data_dir, *args):
    return subprocess.run(
        [sys.executable, "-m", "rag_sft.cli.main", "model", *args],
        env={**os.environ, "RAG_SFT_DATA_DIR": str(data_dir)}, capture_output=True, text=True, check=False,
    )  # fmt: skip


@pytest.mark.parametrize("content", [b'{"versions": [{"version": "v0001", "sta', b"{}", b"[]", b'{"versions": [1]}'])
def test_a_truncated_or_empty_registry_is_refused_with_its_path_not_a_traceback(tmp_path, content):
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "registry.json").write_bytes(content)
    for args in (["list"], ["promote", "v0001", "--reason", "r"], ["rollback", "--reason", "r"]):
        done = model_cli(tmp_path, *args)
        assert done.returncode == 2, args
        assert "Traceback" not in done.stderr and f"error: {tmp_path / 'models' / 'registry.json'}" in done.stderr, done.stderr
        assert "restore it from a backup" in done.stderr
    assert (tmp_path / "models" / "registry.json").read_bytes() == content  # nothing written over it


def test_promoting_a_version_whose_folder_is_gone_is_refused_and_current_stays(tmp_path):
    registry = ModelRegistry(tmp_path / "models")
    for version in ("v0001", "v0002"):
        (registry.root / version).mkdir(parents=True)
        registry.register(version)
    registry.promote("v0001", "gate")
    (registry.root / "v0002").rmdir()  # deleted by hand, or its upload never finished
    done = model_cli(tmp_path, "promote", "v0002", "--reason", "looked fine")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert f"error: model version v0002 has no folder at {registry.root / 'v0002'}" in done.stderr
    assert registry.current() == "v0001" and registry.get("v0002")["status"] == "candidate"
    assert [h["version"] for h in registry.history()] == ["v0001"]
    assert "* v0001" in model_cli(tmp_path, "list").stdout
