import pytest

from rag_sft.cli.main import main
from rag_sft.core import names
from rag_sft.resources import Warehouse

ESCAPES = ["../../x", "2026-11-19/../..", "/etc/passwd", "v001/../../", "2026-11-19\x00", "v001\x00", "", "..", None, 17]


def test_names_that_would_leave_their_folder_are_refused():
    validators = [names.day_name, names.dataset_version_name, names.model_version_name, names.dataset_hash_name]
    for validator in validators:
        for value in ESCAPES:
            with pytest.raises(ValueError, match="is not"):
                validator(value)
    for value in ("2026-02-30", "2026-1-19", "２０２６-11-19", "2026-11-19\n"):
        with pytest.raises(ValueError):
            names.day_name(value)
    with pytest.raises(ValueError, match="64 lower-case hex"):
        names.dataset_hash_name("ab" * 31 + "../")


def test_well_formed_names_pass_unchanged():
    assert names.day_name("2026-11-19") == "2026-11-19"
    assert names.dataset_version_name("v001") == "v001" and names.dataset_version_name("v1234") == "v1234"
    assert names.model_version_name("v0001") == "v0001"
    assert names.dataset_hash_name("0f" * 32) == "0f" * 32


def test_the_warehouse_keeps_exports_inside_the_data_folder(tmp_path):
    warehouse = Warehouse(data_dir=str(tmp_path))
    assert warehouse.jsonl_path("2026-11-19") == tmp_path / "datasets" / "sft" / "date=2026-11-19" / "records.jsonl"
    for day in ("../../x", "2026-11-19/../..", "/abs", "2026-11-19\x00"):
        with pytest.raises(ValueError, match="day"):
            warehouse.export_dir(day)
        with pytest.raises(ValueError):
            warehouse.withdraw_exports(day)


@pytest.mark.parametrize("argv", [
    ["version", "--start", "../../x"],
    ["version", "--end", "2026-11-19/../.."],
    ["train", "--version", "v001/../../"],
    ["train", "--version", "/tmp/elsewhere"],
])
def test_the_command_line_refuses_names_that_are_not_names(argv, capsys):
    assert main(argv) == 2
    assert "error:" in capsys.readouterr().err
