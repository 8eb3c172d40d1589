"""params.yaml's resource settings are valid run config of the jobs the DVC stages run, and
they reach the resources."""

from pathlib import Path

import dagster as dg
import yaml

from rag_sft.cli.versions import params_run_config
from rag_sft.definitions import DAILY_JOB, defs
from rag_sft.sensors.training import TRAINING_JOB
from rag_sft_tests.conftest import ALL_ASSETS

PARAMS = Path(__file__).parents[2] / "params.yaml"


def test_the_stage_settings_are_run_config_of_their_jobs():
    export = params_run_config(str(PARAMS), "export")
    assert export["resources"]["sft_rules"]["config"]["min_confidence"] == 0.6
    assert dg.validate_run_config(defs.resolve_job_def(DAILY_JOB), export)
    train = params_run_config(str(PARAMS), "train")
    train["ops"] = {"training_dataset": {"config": {"version": "v001"}}}
    assert train["resources"]["lora_training"]["config"]["max_label_weight"] == 5.0
    assert dg.validate_run_config(defs.resolve_job_def(TRAINING_JOB), train)


def test_dvc_stages_depend_on_the_code_and_settings_that_shape_them():
    stages = yaml.safe_load((PARAMS.parent / "dvc.yaml").read_text())["stages"]
    assert {"rag_sft/core", "rag_sft/assets", "data/landing"} <= set(stages["export"]["deps"])
    assert "--params params.yaml" in stages["export"]["cmd"] and "--params params.yaml" in stages["train"]["cmd"]
    assert "rag_sft/training" in stages["train"]["deps"]


def test_a_changed_setting_changes_what_the_day_exports(pipeline, tmp_path):
    from rag_sft_tests.assets.test_pipeline import generate

    generate(pipeline, days=["2026-11-19"], events_per_day=120)
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"export": {"resources": {"sft_rules": {"min_confidence": 0.95}}}}))
    default = pipeline.metadata(pipeline.materialize("2026-11-19"), "sft_records")
    strict = dg.materialize(
        ALL_ASSETS,
        partition_key="2026-11-19",
        instance=pipeline.instance,
        resources=pipeline.resources(),
        run_config=params_run_config(str(params), "export"),
    )
    assert pipeline.metadata(strict, "sft_records")["exported"] < default["exported"]
