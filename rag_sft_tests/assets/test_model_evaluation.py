"""model_evaluation on the tiny local model: the A/B table from generated answers judged over
HTTP by the local server, the comparison with the version in use, the eval-loss fallback when
no judge is configured, and rollback."""

from pathlib import Path

import dagster as dg
import orjson

from rag_sft.cli.main import main
from rag_sft.core import rules
from rag_sft.io.registry.model_registry import ModelRegistry
from rag_sft.resources import Evaluator, LoraTraining
from rag_sft.testing.openai_server import running_stub
from rag_sft_tests.assets.test_pipeline import generate

# The fixtures' completions are naive: these tests check the training mechanics, so they opt in.
FAST = {"learning_rate": 5e-3, "epochs": 1, "max_length": 96, "batch_size": 16, "train_on_naive_completions": True}
LABELS = ("factuality_error", "incomplete_answer", "low_relevance", "overconfidence")


def judge_at(stub, **settings) -> Evaluator:
    # 6 questions, all of them allowed to count: the gate's decision is reached, not refused for size.
    return Evaluator(base_url=stub.base_url, api_key=dg.EnvVar("RAG_SFT_TEST_JUDGE_KEY"), model="stand-in", stand_in=True,
                     eval_questions=6, max_new_tokens=8, bootstrap_resamples=200, min_judged_pairs=6, **settings)


def test_the_candidate_is_judged_against_the_version_in_use_and_rollback_restores_it(pipeline, tiny_base, monkeypatch):
    monkeypatch.setenv("RAG_SFT_TEST_JUDGE_KEY", "sk-judge")
    generate(pipeline, days=["2026-11-19"], events_per_day=150)
    pipeline.materialize("2026-11-19")
    registry = ModelRegistry(pipeline.data / "models")
    with running_stub() as stub:
        first = pipeline.train(LoraTraining(base_model=str(tiny_base), **FAST), evaluator=judge_at(stub))
        assert first.success
        evaluation = pipeline.metadata(first, "model_evaluation")
        assert evaluation["in_use"] == "the base model" and "STAND-IN" in evaluation["judge"]
        table = evaluation["ab_table"]
        assert [r.data["metric"] for r in table.records][:4] == [f"{label} rate" for label in LABELS]
        assert set(table.records[0].data) == {"metric", "candidate", "base", "change"}
        entry = registry.get("v0001")
        assert [column["model"] for column in entry["ab"]] == ["candidate", "base"]
        assert all(column["judged"] == 6 and column["tokens_per_answer"] > 0 for column in entry["ab"])
        assert entry["ab_change"]["factuality_error"]["pairs"] == 6 and entry["reason"]
        # The gate's exact test, with its counts and judged coverage, in the metadata and the registry.
        test = entry["gate_test"]
        assert test["judged_pairs"] == 6 and test["judged_coverage"] == 1.0 and test["label"] == "factuality_error"
        assert evaluation["exact_test_p_value"] == test["p_value"] and evaluation["judged_coverage"] == 1.0
        assert (evaluation["fixed"], evaluation["broken"]) == (test["fixed"], test["broken"])
        assert "factuality_error exact McNemar" in [r.data["metric"] for r in table.records]
        # The replay set's failures, never trained on, answered by the candidate and the model in use.
        replayed = pipeline.metadata(first, "training_dataset")["replay_failures"]
        assert replayed > 0 and entry["replay_test"]["questions"] == evaluation["replay_failures"] == replayed
        replay_row = next(r.data for r in table.records if r.data["metric"] == "replay failures fixed")
        assert replay_row["change"].startswith(f"{evaluation['replay_fixed']} fixed, {evaluation['replay_broken']} broken, p = ")
        assert stub.state.stats()["answered"] >= 6  # the judge was asked over HTTP
        # Each model answered the service's prompt: the documents and the question, no correction hint.
        example = evaluation["served_prompt_example"]
        assert "# 问题" in example or "# Question" in example
        instructions = {text for texts in rules.INSTRUCTIONS.values() for text in texts.values()}
        assert not any(instruction in example for instruction in instructions)

        registry.promote("v0001", "by hand, for the test")
        second = pipeline.train(LoraTraining(base_model=str(tiny_base), seed=1, **FAST), evaluator=judge_at(stub))
    assert second.success
    evaluation = pipeline.metadata(second, "model_evaluation")
    assert evaluation["in_use"] == "v0001"  # the comparison is with the version in use, not the base
    entry = registry.get("v0002")
    assert [column["model"] for column in entry["ab"]] == ["candidate", "v0001", "base"]
    assert "vs v0001" in entry["reason"]

    if entry["status"] != "promoted":
        registry.promote("v0002", "by hand, for the test")
    assert registry.current() == "v0002"
    assert registry.rollback("v0002 answers worse in production") == ("v0002", "v0001")
    assert registry.current() == "v0001" and registry.get("v0002")["status"] == "rolled_back"
    assert registry.history()[-1]["reason"] == "v0002 answers worse in production"


def test_without_a_judge_the_version_is_a_candidate_for_review_never_promoted(pipeline, tiny_base, monkeypatch, capsys):
    generate(pipeline, days=["2026-11-19"], events_per_day=150)
    pipeline.materialize("2026-11-19")
    result = pipeline.train(LoraTraining(base_model=str(tiny_base), max_label_weight=2.0, **FAST))
    assert result.success
    evaluation = pipeline.metadata(result, "model_evaluation")
    assert evaluation["decision"].startswith("no judge configured: left a candidate for review (rag-sft model promote v0001); "
                                             "eval loss against the base model: ")
    assert evaluation["judge"] == "none: the eval-loss gate"
    assert evaluation["eval_loss"] < evaluation["base_eval_loss"]  # a lower eval loss promotes nothing by itself
    assert not evaluation["promoted"] and evaluation["status"] == "candidate"
    registry = ModelRegistry(pipeline.data / "models")
    assert registry.get("v0001")["status"] == "candidate" and registry.current() is None
    # A person reviews it: `rag-sft model list` shows the candidate, `promote` puts it in use.
    monkeypatch.setenv("RAG_SFT_DATA_DIR", str(pipeline.data))
    assert main(["model", "list"]) == 0
    assert "  v0001    candidate   v001" in capsys.readouterr().out
    assert main(["model", "promote", "v0001", "--reason", "read its answers"]) == 0
    assert registry.current() == "v0001" and registry.get("v0001")["status"] == "promoted"
    # The label weights are the training split's, capped; the day's JSONL keeps its own.
    dataset = pipeline.metadata(result, "training_dataset")
    weights = {key.removeprefix("label_weight/"): value for key, value in dataset.items() if key.startswith("label_weight/")}
    assert weights and max(weights.values()) <= 2.0
    manifest = orjson.loads((pipeline.data / "training").glob("*/manifest.json").__next__().read_bytes())
    assert manifest["label_weights"] == weights
    day = [orjson.loads(line) for line in pipeline.jsonl("2026-11-19").read_bytes().splitlines()]
    assert max(record["label_weight"] for record in day) > 2.0


def test_the_training_run_shows_its_dataset_version_real_folders_and_plottable_losses(pipeline, tiny_base):
    generate(pipeline, days=["2026-11-19"], events_per_day=150)
    pipeline.materialize("2026-11-19")
    result = pipeline.train(LoraTraining(base_model=str(tiny_base), **FAST))
    assert result.success
    # The version training froze is in sft_dataset_version's history, from this run.
    [version] = pipeline.instance.fetch_materializations(dg.AssetKey("sft_dataset_version"), limit=5).records
    assert version.run_id == result.run_id and version.asset_materialization.metadata["dataset_version"].value == "v001"
    # The path entries are the project's folders, not an IO manager's pickles.
    dataset, adapter = pipeline.metadata(result, "training_dataset"), pipeline.metadata(result, "lora_adapter")
    assert Path(dataset["path"]).parent == pipeline.data / "training" and (Path(dataset["path"]) / "manifest.json").is_file()
    assert Path(adapter["path"]) == pipeline.data / "models" / adapter["version"]
    assert (Path(adapter["path"]) / "adapter").is_dir()
    # The loss per step is a (step, loss) table; the final figures are numbers.
    steps = [row.data for row in adapter["train_loss_per_step"].records]
    assert [row["step"] for row in steps] == list(range(1, adapter["steps"] + 1)) and adapter["steps"] > 0
    assert isinstance(adapter["final_train_loss"], float) and isinstance(adapter["final_eval_loss"], float)
