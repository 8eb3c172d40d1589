"""`rag-sft model`: list, promote and roll back with reasons; concurrent registry updates."""

import threading

from rag_sft.cli.main import main
from rag_sft.io.model_registry import ModelRegistry


def test_promote_and_rollback_by_hand_record_their_reasons(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RAG_SFT_DATA_DIR", str(tmp_path))
    registry = ModelRegistry(tmp_path / "models")
    for version in ("v0001", "v0002", "v0003"):
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
