"""`make run`'s training demo: it trains on naive completions only by an explicit opt-in, and says so."""

from rag_sft.cli.training_demo import TrainingReport, format_training, naive_opt_in
from rag_sft_tests.helpers import write_lines


def exported(data_dir, strategy):
    write_lines(data_dir / "datasets" / "sft" / "date=2026-11-19" / "records.jsonl", [{"sample_id": "r1_x", "completion_strategy": strategy}])


def test_the_demo_opts_in_to_naive_completions_only_when_nothing_else_exists_and_says_so(tmp_path, monkeypatch):
    monkeypatch.delenv("RAG_SFT_TRAIN_ON_NAIVE_COMPLETIONS", raising=False)
    exported(tmp_path, "naive")
    assert naive_opt_in(tmp_path) == {"RAG_SFT_TRAIN_ON_NAIVE_COMPLETIONS": "1"}
    exported(tmp_path, "llm")
    assert naive_opt_in(tmp_path) == {}  # corrections exist: no opt-in
    exported(tmp_path, "naive")
    monkeypatch.setenv("RAG_SFT_TRAIN_ON_NAIVE_COMPLETIONS", "0")
    assert naive_opt_in(tmp_path) == {}  # the user's choice stands

    report = TrainingReport("skipped", "0 of 1000 new samples", notes=["demo: the exported completions are all naive"])
    assert "  demo: the exported completions are all naive" in format_training(report)
