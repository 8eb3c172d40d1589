"""The exports load as they are: `datasets.load_dataset("json", ...)` on every file, and TRL's
SFTTrainer trains two steps on the tiny local model over the TRL export."""

from __future__ import annotations

import math
from pathlib import Path

import dagster as dg
import orjson
import pytest

from rag_sft.core import exports
from rag_sft.resources import Completions, TrainerExports
from rag_sft.testing.openai_server import running_stub
from rag_sft_tests.assets.test_pipeline import generate

DAY = "2026-11-19"
ALL = TrainerExports(formats=list(exports.FORMATS))
COLUMNS = {
    exports.TRL_PROMPT_COMPLETION: ["prompt", "completion"],
    exports.TRL_MESSAGES: ["messages"],
    exports.OPENAI_CHAT: ["messages"],
    exports.ALPACA: ["instruction", "input", "output", "system"],
}


@pytest.fixture(autouse=True)
def offline_datasets(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf-datasets"))


def load(path):
    from datasets import load_dataset

    return load_dataset("json", data_files=str(path), split="train")


def test_every_day_export_loads_with_datasets(pipeline):
    generate(pipeline, days=[DAY], events_per_day=200)
    result = pipeline.materialize(DAY, trainer_exports=ALL)
    exported = pipeline.metadata(result, "sft_jsonl")["dagster/row_count"]
    folder = pipeline.jsonl(DAY).parent
    records = [orjson.loads(line) for line in pipeline.jsonl(DAY).read_bytes().splitlines()]
    for export_format, columns in COLUMNS.items():
        dataset = load(folder / exports.file_name(export_format))
        assert dataset.column_names == columns and dataset.num_rows == exported
    first = load(folder / "trl_messages.jsonl")[0]["messages"]
    assert [m["role"] for m in first] == ["user", "assistant"]
    assert (first[0]["content"], first[1]["content"]) == (records[0]["prompt"], records[0]["completion"])
    chat = load(folder / "openai_chat.jsonl")[0]["messages"]
    assert [m["role"] for m in chat] == ["system", "user", "assistant"] and chat[2]["weight"] == 1
    info = orjson.loads((folder / "dataset_info.json").read_bytes())
    assert info[f"rag_sft_{DAY}"]["file_name"] == "alpaca.jsonl"
    assert (folder / info[f"rag_sft_{DAY}"]["file_name"]).exists()
    metadata = pipeline.metadata(result, "sft_jsonl")
    assert {key.removeprefix("trainer_export/") for key in metadata if key.startswith("trainer_export/")} == set(exports.FORMATS)

    # Fewer formats next time: the day is replaced whole, the others go.
    pipeline.materialize(DAY, trainer_exports=TrainerExports(formats=["trl_prompt_completion"]))
    assert sorted(p.name for p in folder.iterdir()) == ["records.jsonl", "trl_prompt_completion.jsonl"]


def test_preference_pairs_load_where_an_llm_corrected_the_answers(pipeline, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-local")
    generate(pipeline, days=[DAY], events_per_day=120)
    with running_stub() as stub:
        completions = Completions(strategy="llm", base_url=stub.base_url, model="teacher", api_key=dg.EnvVar("OPENAI_API_KEY"))
        result = pipeline.materialize(DAY, completions=completions, trainer_exports=ALL)
    pairs = load(pipeline.jsonl(DAY).with_name("preferences.jsonl"))
    assert pairs.column_names[:3] == ["prompt", "chosen", "rejected"]
    assert pairs.num_rows == pipeline.metadata(result, "sft_jsonl")["preference_pairs"] > 0
    assert all(row["chosen"] != row["rejected"] for row in pairs)


def test_training_datasets_carry_the_exports_and_trl_trains_on_them(pipeline, tiny_base, tmp_path):
    from rag_sft.resources import LoraTraining

    generate(pipeline, days=[DAY], events_per_day=150)
    pipeline.materialize(DAY)
    fast = LoraTraining(base_model=str(tiny_base), max_length=64, batch_size=16, train_on_naive_completions=True)  # naive fixtures
    result = pipeline.train(fast, trainer_exports=ALL)
    assert result.success
    dataset = pipeline.metadata(result, "training_dataset")
    folder = Path(dataset["path"])
    assert folder.parent == pipeline.root / "data" / "training"
    for split, rows in (("train", dataset["train_records"]), ("eval", dataset["eval_records"])):
        for export_format, columns in COLUMNS.items():
            loaded = load(folder / exports.file_name(export_format, split))
            assert loaded.column_names == columns and loaded.num_rows == rows
    info = orjson.loads((folder / "dataset_info.json").read_bytes())
    assert {entry["file_name"] for entry in info.values()} == {"train.alpaca.jsonl", "eval.alpaca.jsonl"}

    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    train = load(folder / "train.trl_prompt_completion.jsonl")
    # TRL keeps the start of a sample and drops those whose prompt alone fills max_length: the
    # tiny model's full context keeps the RAG prompts whole.
    config = SFTConfig(
        output_dir=str(tmp_path / "trl"), max_steps=2, per_device_train_batch_size=4, max_length=1024,
        logging_steps=1, report_to="none", save_strategy="no", use_cpu=True, dataloader_num_workers=0,
    )  # fmt: skip
    trainer = SFTTrainer(
        model=AutoModelForCausalLM.from_pretrained(tiny_base),
        args=config,
        train_dataset=train,
        processing_class=AutoTokenizer.from_pretrained(tiny_base),
    )
    outcome = trainer.train()
    assert trainer.state.global_step == 2
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert len(losses) == 2 and all(math.isfinite(loss) and loss > 0 for loss in losses)
    assert math.isfinite(outcome.training_loss)
