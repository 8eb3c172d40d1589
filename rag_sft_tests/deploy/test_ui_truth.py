"""What the Dagster UI shows a data engineer, read through the GraphQL API of `dagster dev`
(the webserver the browser talks to) on a real instance: each check's status per day, with a
day whose label mix jumped flagged on its check (and exported all the same: a monitor, not a
gate), the training lineage, and the Parquet assets' column schemas."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from datetime import date
from pathlib import Path

import dagster as dg
import pytest

from rag_sft.core.generator import GeneratorSettings, day_lines
from rag_sft_tests.deploy.test_production_setup import (
    Product,
    final_status,
    launch_day,
    running_dagster_dev,
)

# JUMPED is materialized before OTHER: its trailing day is BALANCED alone, and OTHER's too.
BALANCED, OTHER, JUMPED = "2026-11-01", "2026-11-02", "2026-11-03"


@pytest.fixture(scope="module")
def product(tmp_path_factory):
    root = tmp_path_factory.mktemp("ui")
    home, data, landing = root / "dagster_home", root / "data", root / "data" / "landing"
    landing.mkdir(parents=True)
    for day, factuality_share in ((BALANCED, None), (OTHER, None), (JUMPED, 0.95)):
        settings = GeneratorSettings(events_per_day=200, factuality_share=factuality_share)
        (landing / f"events-{day}.jsonl").write_bytes(b"".join(day_lines(date.fromisoformat(day), settings)))
    variables = {
        "DAGSTER_HOME": str(home),
        "RAG_SFT_DATA_DIR": str(data),
        "RAG_SFT_LANDING_DIR": str(landing),
        "RAG_SFT_START_DATE": BALANCED,
        "RAG_SFT_AUTOMATION": "off",
        "RAG_SFT_MIN_NEW_SAMPLES": "1000000",  # no training here
    }
    subprocess.run([Path(sys.executable).with_name("rag-sft"), "init-home"], env={**os.environ, **variables}, check=True)
    try:
        with running_dagster_dev(root, home, data, landing, variables) as running:
            yield running
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _materialize_day(product: Product, day: str) -> dict:
    run_id = launch_day(product, day)
    assert final_status(product, run_id) == "SUCCESS"
    return product.instance.get_run_by_id(run_id).tags


CHECK_STATUSES = """
query($asset: AssetKeyInput!, $check: String!) { assetNodeOrError(assetKey: $asset) { ... on AssetNode {
  assetCheckOrError(checkName: $check) { __typename ... on AssetCheck { partitionStatuses { __typename
    ... on AssetCheckTimePartitionStatuses { ranges { startKey endKey status } } } } } } } }
"""


def _check_status_by_day(product: Product, asset: str, check: str) -> dict[str, str]:
    answer = product.graphql(CHECK_STATUSES, {"asset": {"path": [asset]}, "check": check})
    statuses = answer["assetNodeOrError"]["assetCheckOrError"]["partitionStatuses"]
    by_day = {}
    for status_range in statuses["ranges"]:
        first, last = date.fromisoformat(status_range["startKey"]), date.fromisoformat(status_range["endKey"])
        for offset in range((last - first).days + 1):
            by_day[date.fromordinal(first.toordinal() + offset).isoformat()] = status_range["status"]
    return by_day


def _all_statuses(product: Product) -> dict[tuple[str, str], dict[str, str]]:
    checks = [("sft_records", "confidence"), ("sft_records", "label_balance"), ("sft_jsonl", "export_format")]
    return {(asset, check): _check_status_by_day(product, asset, check) for asset, check in checks}


def test_each_check_shows_its_status_per_day_and_a_jump_of_the_label_mix_stays_flagged(product):
    assert "rag_sft/held_back" not in _materialize_day(product, BALANCED)
    assert "rag_sft/held_back" not in _materialize_day(product, JUMPED)  # 95% factuality errors: exported
    expected = {
        ("sft_records", "confidence"): {BALANCED: "SUCCEEDED", JUMPED: "SUCCEEDED"},
        # The mix jumped against the trailing day: flagged (a WARN), never held back.
        ("sft_records", "label_balance"): {BALANCED: "SUCCEEDED", JUMPED: "FAILED"},
        ("sft_jsonl", "export_format"): {BALANCED: "SUCCEEDED", JUMPED: "SUCCEEDED"},
    }
    assert _all_statuses(product) == expected

    _materialize_day(product, OTHER)  # a passing run does not hide the flagged day
    for key, days in expected.items():
        days[OTHER] = "SUCCEEDED"
    assert _all_statuses(product) == expected

    records = product.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("sft_jsonl"), asset_partitions=[JUMPED]), limit=1
    ).records[0].asset_materialization.metadata
    assert records["published"].value is True and records["export"].value == "ok"


ASSET_NODES = """
{ assetNodes { assetKey { path } dependencyKeys { path } owners { ... on TeamAssetOwner { team } }
  metadataEntries { label __typename ... on TableSchemaMetadataEntry { schema { columns { name type } } } } } }
"""


def test_the_training_lineage_and_the_column_schemas_show(product):
    nodes = {"/".join(node["assetKey"]["path"]): node for node in product.graphql(ASSET_NODES)["assetNodes"]}

    def upstream(asset: str) -> set[str]:
        return {"/".join(key["path"]) for key in nodes[asset]["dependencyKeys"]}

    assert upstream("training_dataset") == {"sft_dataset_version"}
    assert upstream("sft_dataset_version") == {"sft_jsonl"}
    assert upstream("lora_adapter") == {"training_dataset"}
    for asset in ("raw_events", "rejected_events", "annotated_samples", "sft_records"):
        [schema] = [e["schema"] for e in nodes[asset]["metadataEntries"] if e["label"] == "dagster/column_schema"]
        columns = {column["name"]: column["type"] for column in schema["columns"]}
        assert columns["date"] == "string" and len(columns) > 5
        assert nodes[asset]["owners"] == [{"team": "rag-data"}]
    record_columns = [e for e in nodes["sft_records"]["metadataEntries"] if e["label"] == "dagster/column_schema"][0]
    assert {"status", "held_back_by", "label_weight"} <= {c["name"] for c in record_columns["schema"]["columns"]}
