import subprocess
import sys

import dagster as dg

from rag_sft import definitions


def test_definitions_load_with_every_asset_check_job_and_sensor():
    dg.Definitions.validate_loadable(definitions.defs)
    job = definitions.defs.resolve_job_def(definitions.DAILY_JOB)
    assert job.partitions_def is not None
    graph = definitions.defs.resolve_asset_graph()
    keys = {key.to_user_string() for key in graph.get_all_asset_keys()}
    assert keys == {
        "raw_events", "rejected_events", "annotated_samples", "sft_records", "sft_jsonl", "sft_dataset_version",
        "training_dataset", "lora_adapter", "model_evaluation", "embedding_pairs", "retrieval_gaps",
    }
    checks = {(key.asset_key.to_user_string(), key.name) for key in graph.asset_check_keys}
    assert checks == {
        ("sft_records", "confidence"), ("sft_records", "label_balance"), ("sft_jsonl", "export_format"),
        ("training_dataset", "train_label_balance"), ("training_dataset", "eval_leakage"),
        ("embedding_pairs", "pair_similarity"), ("embedding_pairs", "query_length"), ("embedding_pairs", "pairs_disjoint"),
    }  # fmt: skip
    assert definitions.defs.resolve_job_def("lora_training_job") is not None
    for name in ("lora_training_sensor", "source_change_sensor"):
        assert definitions.defs.resolve_sensor_def(name).default_status == dg.DefaultSensorStatus.RUNNING
    schedule = definitions.defs.resolve_schedule_def("daily_sft_schedule")
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    assert (schedule.cron_schedule, schedule.execution_timezone, schedule.job_name) == ("0 1 * * *", "UTC", "daily_sft_job")


def test_loading_the_definitions_does_not_import_torch():
    code = "import sys, rag_sft.definitions; print(sorted({'torch', 'transformers', 'peft'} & set(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_the_training_sensor_says_its_n():
    from rag_sft.resources import LoraTraining
    from rag_sft.sensors.training import lora_training_sensor

    assert f"hold {LoraTraining().min_new_samples:,} samples not trained on yet" in lora_training_sensor.description
