"""What a run writes holds users' text: by default only its owner can read it."""

import os
import stat

import dagster as dg
import pytest

from rag_sft.assets.versions import sft_dataset_version
from rag_sft.resources import Warehouse
from rag_sft_tests.conftest import ALL_ASSETS
from rag_sft_tests.helpers import event, write_lines

DAY = "2026-11-19"


@pytest.fixture
def usual_umask():
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def modes(folder) -> dict[str, set[int]]:
    found = {"files": set(), "folders": {stat.S_IMODE(folder.stat().st_mode)}}
    for path in folder.rglob("*"):
        found["folders" if path.is_dir() else "files"].add(stat.S_IMODE(path.lstat().st_mode))
    return found


def materialize_and_version(pipeline, warehouse: Warehouse) -> None:
    write_lines(pipeline.landing / f"events-{DAY}.jsonl", [event(f"r{n}", score=0.9) for n in range(5)] + [b"{broken"])
    dg.materialize(ALL_ASSETS, partition_key=DAY, instance=pipeline.instance,
                   resources={**pipeline.resources(), "warehouse": warehouse})  # fmt: skip
    dg.materialize([sft_dataset_version], instance=pipeline.instance, resources={"warehouse": warehouse},
                   run_config={"ops": {"sft_dataset_version": {"config": {"start": DAY, "end": DAY}}}})  # fmt: skip


def test_every_file_a_run_writes_is_its_owners_alone(pipeline, usual_umask):
    materialize_and_version(pipeline, Warehouse(data_dir=str(pipeline.data), batch_size=2, workers=2))
    assert (pipeline.data / "datasets" / "versions" / "v001" / "manifest.json").exists()
    assert (pipeline.data / "warehouse" / "rejected_events" / f"date={DAY}" / "part-0.parquet").exists()
    assert modes(pipeline.data) == {"files": {0o600}, "folders": {0o700}}
    assert os.umask(0o022) == 0o022  # the process's own umask is back after the run


def test_private_files_off_leaves_the_process_umask(pipeline, usual_umask):
    materialize_and_version(pipeline, Warehouse(data_dir=str(pipeline.data), private_files=False))
    assert modes(pipeline.data) == {"files": {0o644}, "folders": {0o755}}
