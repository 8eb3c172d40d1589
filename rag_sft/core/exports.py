"""The exported records in the formats common trainers load as they are.

Each format is a function of the `prompt` and `completion` columns, assembled column-wise
by Arrow like the daily JSONL (docs/outputs.md, "Exports for trainers"):

- `trl_prompt_completion`: `{"prompt", "completion"}`, TRL's prompt-completion format;
- `trl_messages`: `{"messages": [user, assistant]}`, TRL's conversational format;
- `openai_chat`: `{"messages": [system, user, assistant]}`, OpenAI's chat fine-tuning format;
- `alpaca`: `{"instruction", "input", "output", "system"}`, LLaMA-Factory's alpaca format,
  registered by a `dataset_info.json` entry (`llama_factory_dataset_info`).
"""

from __future__ import annotations

from collections.abc import Iterable

import orjson
import pyarrow as pa
import pyarrow.compute as pc

from rag_sft.core.tables import JsonlChunk, json_strings, line_chunk

TRL_PROMPT_COMPLETION = "trl_prompt_completion"
TRL_MESSAGES = "trl_messages"
OPENAI_CHAT = "openai_chat"
ALPACA = "alpaca"
FORMATS = (TRL_PROMPT_COMPLETION, TRL_MESSAGES, OPENAI_CHAT, ALPACA)

DEFAULT_SYSTEM_MESSAGE = (
    "You answer questions from the documents given, following the instruction: stay on the "
    "question, cover its key points, say so when the documents do not answer it, avoid absolute claims."
)


def file_name(export_format: str, split: str | None = None) -> str:
    return f"{split}.{export_format}.jsonl" if split else f"{export_format}.jsonl"


def parse_formats(text: str) -> list[str]:
    """`all`, or formats separated by commas (RAG_SFT_EXPORT_FORMATS)."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    return list(FORMATS) if names == ["all"] else known_formats(list(dict.fromkeys(names)))


def known_formats(names: list[str]) -> list[str]:
    """`names`, when every one is a format; a ValueError naming the others otherwise."""
    unknown = [name for name in names if name not in FORMATS]
    if unknown:
        raise ValueError(f"unknown export format(s) {unknown}; choose from {list(FORMATS)}")
    return names


def export_chunk(records: pa.RecordBatch | pa.Table, export_format: str, system_message: str) -> JsonlChunk:
    """`records` (the exported ones, with `prompt` and `completion`) as lines of `export_format`."""
    if records.num_rows == 0:
        return JsonlChunk(pa.py_buffer(b""), 0)
    prompt = json_strings(_strings(records, "prompt"))
    completion = json_strings(_strings(records, "completion"))
    system = orjson.dumps(system_message).decode()
    if export_format == TRL_PROMPT_COMPLETION:
        pieces = ['{"prompt":', prompt, ',"completion":', completion, "}\n"]
    elif export_format == TRL_MESSAGES:
        pieces = ['{"messages":[{"role":"user","content":', prompt,
                  '},{"role":"assistant","content":', completion, "}]}\n"]  # fmt: skip
    elif export_format == OPENAI_CHAT:
        # OpenAI accepts a weight of 0 or 1 per assistant message only: every answer is learned
        # (weight 1); the sample and label weights have no place in this format.
        pieces = ['{"messages":[{"role":"system","content":' + system + '},{"role":"user","content":', prompt,
                  '},{"role":"assistant","content":', completion, ',"weight":1}]}\n']  # fmt: skip
    elif export_format == ALPACA:
        pieces = ['{"instruction":', prompt, ',"input":"","output":', completion, ',"system":' + system + "}\n"]
    else:
        raise ValueError(f"unknown export format {export_format!r}; choose from {list(FORMATS)}")
    return line_chunk(pc.binary_join_element_wise(*pieces, ""), records.num_rows)


def llama_factory_dataset_info(entries: Iterable[tuple[str, str]]) -> dict:
    """`dataset_info.json` registering alpaca files: (dataset name, file name) pairs."""
    return {
        name: {
            "file_name": file,
            "formatting": "alpaca",
            "columns": {"prompt": "instruction", "query": "input", "response": "output", "system": "system"},
        }
        for name, file in entries
    }


def _strings(records: pa.RecordBatch | pa.Table, name: str) -> pa.Array:
    column = records.column(name)
    return column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
