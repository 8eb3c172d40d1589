"""Run config that becomes paths in training: traversal refused; split settings never overwrite
a training dataset that a model names."""

import dagster as dg
import pytest

from rag_sft.assets.training import training_dataset
from rag_sft.resources import LoraTraining, SftRules, TrainerExports
from rag_sft_tests.assets.test_pipeline import generate

DAY = "2026-11-19"


def freeze(pipeline, run_config: dict | None = None, **training) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [training_dataset],
        instance=pipeline.instance,
        resources={
            "warehouse": pipeline.resources()["warehouse"],
            "lora_training": LoraTraining(base_model="not-needed-to-freeze", **training),
            "trainer_exports": TrainerExports(),
            "sft_rules": SftRules(),
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
