"""The environment's settings hold inside a run even when its run config changes another field
of the same resource (Dagster then drops the values a resource was constructed with)."""

import json
import os
import subprocess
import sys

import pytest

SECRET_KEY = "sk-probe-secret"

# Each resource: the environment it reads, and one other field the run config changes.
CASES = {
    "event_source": (
        {"RAG_SFT_SOURCE": "sql", "RAG_SFT_LANDING_DIR": "{tmp}/landing", "RAG_SFT_SQL_URL": "sqlite:///{tmp}/q.db"},
        {"sql_table": "events_v2"},
    ),
    "warehouse": (
        {"RAG_SFT_DATA_DIR": "{tmp}/data", "RAG_SFT_CACHE_URL": "postgresql+psycopg2://u:cache-pw@db/cache"},
        {"batch_size": 1000},
    ),
    "completions": (
        {
            "RAG_SFT_COMPLETION_STRATEGY": "llm",
            "OPENAI_BASE_URL": "http://127.0.0.1:8199/v1",
            "RAG_SFT_LLM_MODEL": "teacher",
            "OPENAI_API_KEY": SECRET_KEY,
        },
        {"max_concurrent_requests": 4},
    ),
    "trainer_exports": ({"RAG_SFT_EXPORT_FORMATS": "alpaca,openai_chat"}, {"system_message": "be brief"}),
    "lora_training": (
        {
            "RAG_SFT_BASE_MODEL": "{tmp}/base",
            "RAG_SFT_MIN_NEW_SAMPLES": "7",
            "RAG_SFT_TRAIN_LAST_DAYS": "2",
            "RAG_SFT_TRAIN_LEARNING_RATE": "0.002",
            "RAG_SFT_TRAIN_MAX_LENGTH": "256",
            "RAG_SFT_TRAIN_EPOCHS": "3",
        },
        {"r": 4},
    ),
}

# Loads the project's definitions afresh, then runs, for each resource, an asset that records the
# resource's fields as the run sees them (secrets only as whether they resolve to the environment's).
PROBE = """
import json, os, sys
import dagster as dg
from rag_sft.definitions import defs
from rag_sft.resources import resolved

key, overrides = sys.argv[1], json.loads(sys.argv[2])
SECRETS = {  # whether each secret resolves to the environment's value
    "api_key": lambda value: os.environ.get(value["env"]) == os.environ["OPENAI_API_KEY"],
    "sql_url": lambda value: resolved(value) == os.environ["RAG_SFT_SQL_URL"],
    "cache_url": lambda value: resolved(value) == os.environ["RAG_SFT_CACHE_URL"],
}

@dg.asset(required_resource_keys={key})
def probe(context):
    resource = getattr(context.resources, key)
    fields = {name: SECRETS[name](value) if name in SECRETS else value for name, value in resource.model_dump().items()}
    context.add_output_metadata({"fields": dg.MetadataValue.json(fields)})

result = dg.materialize([probe], resources={key: defs.resources[key]},
                        run_config={"resources": {key: {"config": overrides}}})
materialization = result.get_asset_materialization_events()[0].event_specific_data.materialization
launchpad_defaults = json.dumps(defs.resources[key].get_resource_definition().config_schema.default_value)
print(json.dumps({"fields": materialization.metadata["fields"].value, "launchpad": launchpad_defaults}))
"""


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("env")
    environment = {name: value for name, value in os.environ.items() if not name.startswith(("RAG_SFT_", "OPENAI_"))}
    for variables, _ in CASES.values():
        environment.update({name: value.format(tmp=tmp) for name, value in variables.items()})
    cwd = tmp_path_factory.mktemp("cwd")  # relative defaults would land here
    seen = {}
    for key, (_, overrides) in CASES.items():
        done = subprocess.run(
            [sys.executable, "-c", PROBE, key, json.dumps(overrides)],
            env=environment, cwd=cwd, capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
        assert SECRET_KEY not in done.stdout + done.stderr and "cache-pw" not in done.stdout + done.stderr
        seen[key] = json.loads(done.stdout.strip().splitlines()[-1])
    return {"tmp": str(tmp), **seen}


def expected_fields(key: str, tmp: str) -> dict:
    return {
        "event_source": {"kind": "sql", "landing_dir": f"{tmp}/landing", "sql_url": True, "sql_table": "events_v2"},
        "warehouse": {"data_dir": f"{tmp}/data", "batch_size": 1000, "cache_url": True},
        "completions": {
            "strategy": "llm", "base_url": "http://127.0.0.1:8199/v1", "model": "teacher", "api_key": True,
            "max_concurrent_requests": 4,
        },
        "trainer_exports": {"formats": ["alpaca", "openai_chat"], "system_message": "be brief"},
        "lora_training": {
            "base_model": f"{tmp}/base", "min_new_samples": 7, "last_days": 2, "learning_rate": 0.002,
            "max_length": 256, "epochs": 3, "r": 4,
        },
    }[key]  # fmt: skip


@pytest.mark.parametrize("key", list(CASES))
def test_environment_settings_survive_a_run_config_that_changes_another_field(runs, key):
    fields = runs[key]["fields"]
    expected = expected_fields(key, runs["tmp"])
    assert {name: fields[name] for name in expected} == expected
    assert SECRET_KEY not in runs[key]["launchpad"] and "cache-pw" not in runs[key]["launchpad"]


def test_near_duplicates_are_on_unless_the_environment_turns_them_off(monkeypatch):
    from rag_sft.resources import SftRules

    monkeypatch.delenv("RAG_SFT_NEAR_DUPLICATES", raising=False)
    assert SftRules().near_duplicates is True
    monkeypatch.setenv("RAG_SFT_NEAR_DUPLICATES", "false")
    assert SftRules().near_duplicates is False


RUN_CONFIG_WITH_A_KEY = {"resources": {"completions": {"config": {"api_key": "sk-literal"}}}}


def test_an_api_key_in_run_config_is_refused_before_a_run_is_stored(pipeline):
    import dagster as dg

    from rag_sft_tests.conftest import ALL_ASSETS

    with pytest.raises(dg.DagsterInvalidConfigError) as refused:
        dg.materialize(ALL_ASSETS, partition_key="2026-11-19", instance=pipeline.instance,
                       resources=pipeline.resources(), run_config=RUN_CONFIG_WITH_A_KEY)  # fmt: skip
    assert "root:resources:completions:config:api_key must be dict" in str(refused.value)
    assert '{ env?: ' in str(refused.value)  # where the key goes: a variable's name
    assert "sk-literal" not in str(refused.value)
    assert pipeline.instance.get_runs() == []
    # Naming the variable is what is stored with the run.
    named = {"resources": {"completions": {"config": {"api_key": {"env": "MY_LLM_KEY"}}}}}
    dg.materialize(ALL_ASSETS, partition_key="2026-11-19", instance=pipeline.instance,
                   resources=pipeline.resources(), run_config=named)  # fmt: skip
    [run] = pipeline.instance.get_runs()
    assert run.run_config["resources"]["completions"] == {"config": {"api_key": {"env": "MY_LLM_KEY"}}}


def test_an_api_key_given_in_python_is_refused_with_where_to_set_it():
    import dagster as dg
    from pydantic import ValidationError

    from rag_sft.resources import Completions

    with pytest.raises(ValidationError) as refused:
        Completions(strategy="llm", api_key="sk-literal")
    assert "set OPENAI_API_KEY" in str(refused.value) and "sk-literal" not in str(refused.value)
    assert Completions(api_key=dg.EnvVar("MY_LLM_KEY")).api_key_variable() == "MY_LLM_KEY"
    assert Completions().api_key_variable() == "OPENAI_API_KEY"


def test_the_warehouse_state_is_local_wherever_the_data_is(monkeypatch, tmp_path):
    from rag_sft.io.storage.location import ObjectPath
    from rag_sft.resources import EventSource, LoraTraining, Warehouse

    local = Warehouse(data_dir=str(tmp_path / "data"))
    assert (local.state_dir(), local.cache_dir()) == (tmp_path / "data" / "state", tmp_path / "data" / "cache")
    assert local.table_dir("raw_events") == tmp_path / "data" / "warehouse" / "raw_events"

    monkeypatch.chdir(tmp_path)
    remote = Warehouse(data_dir="s3://bucket/prefix")
    assert remote.state_dir() == tmp_path / ".rag_sft_state" and remote.cache_dir() == tmp_path / ".rag_sft_state" / "cache"
    assert isinstance(remote.table_dir("raw_events"), ObjectPath)
    assert str(remote.jsonl_path("2026-11-19")) == "s3://bucket/prefix/datasets/sft/date=2026-11-19/records.jsonl"
    monkeypatch.setenv("RAG_SFT_STATE_DIR", str(tmp_path / "elsewhere"))
    monkeypatch.setenv("RAG_SFT_DATA_DIR", "s3://bucket/prefix")
    assert Warehouse().state_dir() == tmp_path / "elsewhere" and Warehouse().data_dir == "s3://bucket/prefix"
    # What the defaults keep on disk goes to ./data, never to a folder named after the URI.
    assert EventSource().landing_dir == str(tmp_path / "data" / "landing")
    assert LoraTraining().base_model == str(tmp_path / "data" / "models" / "base" / "tiny-llama")
    assert str(remote.models_dir()) == "s3://bucket/prefix/models"
    assert remote.at(str(remote.models_dir() / "v0001")) == remote.models_dir() / "v0001"


def test_a_landing_dir_in_an_object_store_stays_a_uri(monkeypatch, tmp_path):
    from rag_sft.io.storage.location import ObjectPath
    from rag_sft.resources import EventSource, default_landing_dir

    monkeypatch.setenv("RAG_SFT_LANDING_DIR", "s3://events/landing")
    assert default_landing_dir() == "s3://events/landing"  # not made into a local path
    folder = EventSource(landing_dir=default_landing_dir()).open(tmp_path)
    assert isinstance(folder.root, ObjectPath) and str(folder.root) == "s3://events/landing"
    assert folder.index_path.parent == tmp_path  # its index is local


def test_the_gate_metric_is_a_closed_choice_refused_before_any_generation():
    import pydantic

    from rag_sft.resources import Evaluator

    with pytest.raises(pydantic.ValidationError):
        Evaluator(primary_metric="factuality")  # a typo: today it fails only after every answer is generated
    assert Evaluator(primary_metric="overconfidence").primary_metric == "overconfidence"
