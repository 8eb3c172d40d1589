"""The analysts' notebook runs headless on sample data, every cell, with its plots inline."""

from pathlib import Path

import nbformat
from nbclient import NotebookClient

from rag_sft_tests.assets.test_pipeline import generate
from rag_sft_tests.helpers import hold_back_days

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "quality_report.ipynb"


def test_the_committed_notebook_has_no_outputs():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code and all(cell.outputs == [] and cell.execution_count is None for cell in code)


def test_the_notebook_runs_every_cell_on_sample_data_and_draws_its_plots(pipeline, monkeypatch):
    days = ["2026-11-17", "2026-11-18", "2026-11-19"]
    generate(pipeline, days=days, events_per_day=200, malformed_share=0.05, duplicate_share=0.02)
    counts = {"exported": 0, "held_back": 0}
    for day in days:
        with monkeypatch.context() as patched:
            if day == days[0]:
                hold_back_days(patched)  # a day its checks hold back
            records = pipeline.metadata(pipeline.materialize(day, raise_on_error=False), "sft_records")
        counts = {key: n + records[key] for key, n in counts.items()}
    assert counts["held_back"] > 0
    monkeypatch.setenv("RAG_SFT_DATA_DIR", str(pipeline.data))
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    # Raises CellExecutionError, naming the cell, when any cell fails.
    NotebookClient(notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()

    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]
    assert not [output for output in outputs if output.output_type == "error"]
    images = [output for output in outputs if "image/png" in output.get("data", {})]
    assert len(images) == 4  # exported per day, label share, confidence, reasons
    text = "\n".join(output.get("text", "") for output in outputs if output.output_type == "stream")
    assert "samples over 3 days" in text
    assert f"{counts['exported']:,} exported" in text and f"{counts['held_back']:,} held back" in text
    tables = "\n".join(output["data"].get("text/html", "") for output in outputs if output.output_type == "execute_result")
    expected_in_tables = ("2026-11-19", "factuality_error", "low_confidence", "held back: confidence", "invalid_json")
    for expected in (*expected_in_tables, "duplicate"):
        assert expected in tables, expected
