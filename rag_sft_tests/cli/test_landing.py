"""`rag-sft landing`: the days that lost lines, the files not read, and accepting a loss."""

from rag_sft.cli.main import main
from rag_sft_tests.helpers import event, write_lines


def test_a_person_lists_the_lost_lines_then_accepts_them(tmp_path, monkeypatch, capsys):
    landing = tmp_path / "landing"
    monkeypatch.setenv("RAG_SFT_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("RAG_SFT_LANDING_DIR", str(landing))
    monkeypatch.setenv("RAG_SFT_START_DATE", "2026-11-01")
    write_lines(landing / "events-2026-11-18.jsonl", [event(f"a{i}", "2026-11-18T10:00:00Z") for i in range(7)])
    write_lines(landing / "events-2026-11-19.jsonl", [event("b", "2026-11-19T10:00:00Z")])
    (landing / "notes.csv").write_text("a,b\n")
    assert main(["landing", "losses"]) == 0
    assert "No day has lost lines." in capsys.readouterr().out

    (landing / "events-2026-11-18.jsonl").unlink()
    assert main(["landing", "losses"]) == 0
    listed = capsys.readouterr().out
    assert "2026-11-18: the landing folder now holds 0 lines of this day where it held 7" in listed
    assert "events-2026-11-18.jsonl" in listed and "1 files not read" in listed and "notes.csv" in listed

    assert main(["landing", "accept-loss", "2026-11-18"]) == 0
    assert "accepted: 2026-11-18" in capsys.readouterr().out
    assert main(["landing", "losses"]) == 0
    assert "No day has lost lines." in capsys.readouterr().out
    assert main(["landing", "accept-loss", "2026-11-18"]) == 1  # nothing left to accept
