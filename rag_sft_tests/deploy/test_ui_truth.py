"""What the Dagster UI shows a data engineer, read through the GraphQL API of `dagster dev`
(the webserver the browser talks to) on a real instance: each check's status per day, with a
day whose label mix jumped flagged on its check (and exported all the same: a monitor, not a
gate), a held-back day that reads Failed wherever Dagster shows status (GraphQL, and a browser
walk-through with Playwright over Chromium where both are installed), the training lineage,
and the Parquet assets' column schemas.

The code location is the project's behind a stand-in (`held_back_location.py`): while a marker
file exists, the confidence check fails at ERROR, as no realistic day makes it fail."""

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
from rag_sft_tests.deploy.held_back_marker import HELD_BACK_REASON, HOLD_BACK_MARKER
from rag_sft_tests.deploy.test_production_setup import (
    REPO,
    Product,
    final_status,
    launch_day,
    running_dagster_dev,
)

# JUMPED is materialized before OTHER: its trailing day is BALANCED alone, and OTHER's too.
BALANCED, OTHER, JUMPED, HELD = "2026-11-01", "2026-11-02", "2026-11-03", "2026-11-04"
WORKSPACE = """load_from:
  - python_file:
      relative_path: {location}
      working_directory: {repo}
      location_name: rag_sft
"""


@pytest.fixture(scope="module")
def product(tmp_path_factory):
    root = tmp_path_factory.mktemp("ui")
    home, data, landing = root / "dagster_home", root / "data", root / "data" / "landing"
    landing.mkdir(parents=True)
    for day, factuality_share in ((BALANCED, None), (OTHER, None), (JUMPED, 0.95), (HELD, None)):
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
    workspace = root / "workspace.yaml"
    location = Path(__file__).with_name("held_back_location.py")
    workspace.write_text(WORKSPACE.format(location=location, repo=REPO))
    try:
        with running_dagster_dev(root, home, data, landing, variables, workspace) as running:
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


ASSET_STATUSES = """
query($keys: [AssetKeyInput!]) { assetNodes(assetKeys: $keys) { assetKey { path }
  partitionStats { numMaterialized numFailed }
  assetPartitionStatuses { ... on TimePartitionStatuses { ranges { startKey endKey status } } } } }
"""
RUNS = "{ runsOrError { ... on Runs { results { runId status tags { key value } } } } }"
LATEST_CHECK = """
query($asset: AssetKeyInput!, $check: String!) { assetNodeOrError(assetKey: $asset) { ... on AssetNode {
  assetCheckOrError(checkName: $check) { ... on AssetCheck { executionForLatestMaterialization {
    status evaluation { severity success partition } } } } } } }
"""


def _partition_status_by_day(product: Product, assets: list[str]) -> dict[str, dict[str, str]]:
    """The status of each day on each asset's Partitions bar (the job's bar merges its assets')."""
    answer = product.graphql(ASSET_STATUSES, {"keys": [{"path": [asset]} for asset in assets]})
    statuses = {}
    for node in answer["assetNodes"]:
        by_day = {}
        for status_range in node["assetPartitionStatuses"]["ranges"]:
            first, last = date.fromisoformat(status_range["startKey"]), date.fromisoformat(status_range["endKey"])
            for offset in range((last - first).days + 1):
                by_day[date.fromordinal(first.toordinal() + offset).isoformat()] = status_range["status"]
        statuses[node["assetKey"]["path"][0]] = by_day
    return statuses


def _launch_held_back_day(product: Product, day: str) -> str:
    marker = product.data / HOLD_BACK_MARKER
    marker.touch()
    try:
        run_id = launch_day(product, day)
        assert final_status(product, run_id) == "FAILURE"
    finally:
        marker.unlink()
    return run_id


def test_a_held_back_day_reads_failed_wherever_dagster_shows_status_and_a_warned_day_does_not(product):
    run_id = _launch_held_back_day(product, HELD)
    statuses = _partition_status_by_day(product, ["raw_events", "sft_records", "sft_jsonl"])
    # Nothing shipped: sft_jsonl's partition is Failed (its bar, the catalog's counts, and the job's
    # partitions bar, which merges its assets'); sft_records' rows are there, marked held_back.
    assert statuses["sft_jsonl"][HELD] == "FAILED"
    assert statuses["sft_records"][HELD] == statuses["raw_events"][HELD] == "MATERIALIZED"
    stats = {n["assetKey"]["path"][0]: n["partitionStats"] for n in product.graphql(ASSET_STATUSES)["assetNodes"]}
    assert stats["sft_jsonl"] == {"numMaterialized": 3, "numFailed": 1}  # the catalog's status column
    assert stats["sft_records"] == {"numMaterialized": 4, "numFailed": 0}
    # The warned day (its label mix jumped: label_balance failed at WARN) is materialized, its
    # check yellow, not red.
    assert statuses["sft_jsonl"][JUMPED] == statuses["sft_records"][JUMPED] == "MATERIALIZED"
    assert _check_status_by_day(product, "sft_records", "label_balance")[JUMPED] == "FAILED"
    assert _check_status_by_day(product, "sft_records", "confidence")[HELD] == "FAILED"
    # Not evaluated (no file): the step failed before it; Dagster says its execution failed.
    assert _check_status_by_day(product, "sft_jsonl", "export_format")[HELD] == "EXECUTION_FAILED"
    runs = {run["runId"]: run for run in product.graphql(RUNS)["runsOrError"]["results"]}
    held_run = runs[run_id]
    tags = {tag["key"]: tag["value"] for tag in held_run["tags"]}
    assert held_run["status"] == "FAILURE" and tags["rag_sft/held_back"] == "confidence"
    assert tags["dagster/retry_on_asset_or_op_failure"] == "false"
    [warned_run] = [r for r in runs.values() if {"key": "dagster/partition", "value": JUMPED} in r["tags"]]
    assert warned_run["status"] == "SUCCESS"
    # The failure says why, in the run's log (no cryptic "did not yield ... expected outputs" line).
    entries = product.instance.all_logs(run_id)
    log = "\n".join(f"{entry.user_message} {entry.dagster_event.message if entry.dagster_event else ''}" for entry in entries)
    [failure] = [e.dagster_event.event_specific_data for e in entries if e.dagster_event and e.dagster_event.is_step_failure]
    description = failure.user_failure_data.description
    assert HELD_BACK_REASON in description and "held back from export by confidence" in description
    assert "expected outputs" not in log
    _walk_through_the_browser(product, run_id)


def _walk_through_the_browser(product: Product, run_id: str) -> None:
    """What a data engineer sees: the Partitions tab of sft_jsonl, the held-back partition, the
    catalog row and the runs list, in Debian's Chromium (`apt-get install chromium`: .ci/run
    installs it) driven by Playwright (the dev extra)."""
    from playwright import sync_api as playwright

    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    assert Path(chromium).exists(), "the UI walk-through needs Chromium: apt-get install chromium (as .ci/run does)"
    base = f"http://127.0.0.1:{product.port}"
    with playwright.sync_playwright() as driver:
        # No background networking: this machine's closed network refuses Chromium's own connections.
        flags = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync"]
        browser = driver.chromium.launch(executable_path=chromium, args=flags)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})

        def visit(path: str, text: str):
            page.goto(base + path)
            page.get_by_text(text).first.wait_for(timeout=60_000)
            page.screenshot(path=str(product.home.parent / f"{path.strip('/').replace('/', '_').split('?')[0]}.png"))
            return page.inner_text("body")

        partitions = visit("/assets/sft_jsonl?view=partitions", "Failed (1)")
        assert "Failed (1)" in partitions and "Materialized (3)" in partitions  # BALANCED, OTHER, JUMPED
        records = visit("/assets/sft_records?view=partitions", "Materialized (4)")
        assert "Failed (" not in records or "Failed (0)" in records
        held = visit(f"/assets/sft_jsonl?view=partitions&partition={HELD}", "did not materialize this asset")
        assert f"Run {run_id[:8]} failed, and did not materialize this asset." in held
        lines = [line for line in visit("/runs", "rag_sft/held_back: confidence").splitlines() if line.strip()]
        row = lines[lines.index(run_id[:8]) :]
        row = row[: row.index("View")]  # the run's row: its id ... its status, duration, "View"
        assert "Failure" in row and "rag_sft/held_back: confidence" in row and f"partition: {HELD}" in row
        browser.close()
