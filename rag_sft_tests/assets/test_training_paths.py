"""Run config that becomes paths in training: traversal refused; split settings never overwrite
a training dataset that a model names."""

from pathlib import Path

import dagster as dg
import orjson
import pytest

from rag_sft.assets.training import training_dataset
from rag_sft.core import training_data
from rag_sft.core.replay import is_replay
from rag_sft.resources import Evaluator, LoraTraining, SftRules, TrainerExports
from rag_sft_tests.assets.test_pipeline import generate
from rag_sft_tests.helpers import write_lines

DAY = "2026-11-19"


def freeze(pipeline, run_config: dict | None = None, **training) -> dg.ExecuteInProcessResult:
    # The fixtures' completions are naive: the path tests opt in, the completion test says otherwise.
    training = {"train_on_naive_completions": True, **training}
    return dg.materialize(
        [training_dataset],
        instance=pipeline.instance,
        resources={
            "warehouse": pipeline.resources()["warehouse"],
            "lora_training": LoraTraining(base_model="not-needed-to-freeze", **training),
            "trainer_exports": TrainerExports(),
            "sft_rules": SftRules(),
            "evaluator": Evaluator(),
        },
        run_config=run_config,
        raise_on_error=False,
    )


@pytest.mark.parametrize(
    "config",
    [
        {"version": "../../etc"},
        {"version": "v001/../../x"},
        {"version": "/etc/passwd"},
        {"days": {"../../x": "0" * 64}},
        {"days": {DAY: "../" + "0" * 61}},
        {"days": {"2026-11-19\x00": "0" * 64}},
    ],
)
def test_names_that_would_leave_their_folder_are_refused(pipeline, config):
    result = freeze(pipeline, {"ops": {"training_dataset": {"config": config}}})
    assert not result.success
    [failure] = [event for event in result.all_events if event.is_step_failure]
    assert " is not " in failure.event_specific_data.error.message  # names what the value should look like


def test_another_eval_share_makes_another_folder(pipeline):
    generate(pipeline, days=[DAY], events_per_day=150)
    assert pipeline.materialize(DAY).success
    paths = []
    for share in (0.1, 0.3, 0.1):
        result = freeze(pipeline, eval_share=share)
        assert result.success
        [event] = [e for e in result.get_asset_materialization_events() if e.asset_key == dg.AssetKey("training_dataset")]
        paths.append(event.event_specific_data.materialization.metadata["path"].value)
    assert paths[0] != paths[1] and paths[0] == paths[2]
    assert [p.name for p in (pipeline.data / "training").iterdir() if p.name.startswith(".")] == []


def test_a_training_dataset_holds_only_completions_that_can_be_right(pipeline):
    generate(pipeline, days=[DAY], events_per_day=150)
    pipeline.materialize(DAY)
    exported = [orjson.loads(line) for line in pipeline.jsonl(DAY).read_bytes().splitlines()]
    assert {record["completion_strategy"] for record in exported} == {"naive"}
    # Naive only, no opt-in: nothing to train on, and the run says why.
    refused = freeze(pipeline, train_on_naive_completions=False, replay_share=0)  # no replay set: every record counts
    assert not refused.success
    assert f"no completion that can be right to train on: {len(exported)} naive" in str(refused.get_step_failure_events()[0].event_specific_data.error)
    # A person corrects 40 answers: the dataset holds those, marked human, and leaves the naive ones out.
    corrected = {record["sample_id"]: f"corrected answer {n}" for n, record in enumerate(exported[:40])}
    write_lines(pipeline.data / "corrections" / "batch-1.jsonl", [{"sample_id": k, "completion": v} for k, v in corrected.items()])
    result = freeze(pipeline, train_on_naive_completions=False, replay_share=0)
    assert result.success
    folder = Path(pipeline.metadata(result, "training_dataset")["path"])
    records = [orjson.loads(line) for name in ("train.jsonl", "eval.jsonl") for line in (folder / name).read_bytes().splitlines()]
    assert records and all(corrected[r["sample_id"]] == r["completion"] for r in records)
    assert {r["completion_strategy"] for r in records} == {"human"}
    # Every corrected answer is accounted for: trained, judged, or set aside with a reason.
    metadata = pipeline.metadata(result, "training_dataset")
    assert len(records) + metadata["held_out_variants"] + metadata["label_cap"] == 40
    manifest = orjson.loads((folder / "manifest.json").read_bytes())
    assert manifest["completion_strategies"] == {"human": 40} and manifest["left_out"] == {"naive": len(exported) - 40}
    # The daily export is left as it was, for inspection.
    assert [orjson.loads(line) for line in pipeline.jsonl(DAY).read_bytes().splitlines()] == exported


def test_replayed_failures_are_never_trained_on_and_the_replay_set_grows_bounded(pipeline):
    generate(pipeline, days=["2026-11-18"], events_per_day=150)
    pipeline.materialize("2026-11-18")
    first = Path(pipeline.metadata(freeze(pipeline, replay_share=0.2), "training_dataset")["path"])

    def lines(folder, name):
        return [orjson.loads(line) for line in (folder / name).read_bytes().splitlines()]

    replayed = lines(first, "replay.jsonl")
    trained = lines(first, "train.jsonl") + lines(first, "eval.jsonl")
    # No question of the replay set, nor a retyped variant or near-duplicate of one, is trained on or judged.
    keys = training_data.question_keys([r["question"] for r in replayed + trained])
    groups = training_data.question_groups(keys, SftRules().near_duplicate_similarity)
    replayed_groups = {groups[key] for key in keys[: len(replayed)]}
    assert replayed and all(is_replay(group, 0.2) for group in replayed_groups)
    assert not replayed_groups & {groups[key] for key in keys[len(replayed) :]}
    exported = pipeline.jsonl("2026-11-18").read_bytes().splitlines()
    metadata = pipeline.metadata(freeze(pipeline, replay_share=0.2), "training_dataset")
    assert len(replayed) + len(trained) + metadata["held_out_variants"] + metadata["label_cap"] == len(exported)

    generate(pipeline, days=["2026-11-19"], events_per_day=150)
    pipeline.materialize("2026-11-19")
    second = Path(pipeline.metadata(freeze(pipeline, replay_share=0.2), "training_dataset")["path"])
    grown_set = lines(second, "replay.jsonl")
    assert [r["sample_id"] for r in grown_set[: len(replayed)]] == [r["sample_id"] for r in replayed]  # kept, first
    assert len(grown_set) > len(replayed)
    bounded = Path(pipeline.metadata(freeze(pipeline, replay_share=0.2, max_replay_failures=5), "training_dataset")["path"])
    assert [r["sample_id"] for r in lines(bounded, "replay.jsonl")] == [r["sample_id"] for r in grown_set[-5:]]
