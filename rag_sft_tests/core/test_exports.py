"""Every trainer format is valid JSON with the record's texts, whatever they hold."""

import orjson
import pyarrow as pa
import pytest

from rag_sft.core import exports

TEXTS = {
    "prompt": ['[文档1] 退款 "七天" 到账。\n\n# 问题\n退款多久?', "Line\twith\\backslash and \x01 control"],
    "completion": ["【纠正】七个工作日内到账。", "It depends.\r\nSee the docs."],
}


def lines_of(export_format, system="Be careful."):
    chunk = exports.export_chunk(pa.table(TEXTS), export_format, system)
    lines = [orjson.loads(line) for line in bytes(chunk.data).splitlines()]
    assert len(lines) == chunk.lines == 2
    return lines


def test_trl_prompt_completion():
    assert lines_of(exports.TRL_PROMPT_COMPLETION) == [
        {"prompt": p, "completion": c} for p, c in zip(TEXTS["prompt"], TEXTS["completion"])
    ]


def test_trl_conversational_messages():
    assert lines_of(exports.TRL_MESSAGES) == [
        {"messages": [{"role": "user", "content": p}, {"role": "assistant", "content": c}]}
        for p, c in zip(TEXTS["prompt"], TEXTS["completion"])
    ]


def test_openai_chat_with_system_and_a_learned_assistant_turn():
    assert lines_of(exports.OPENAI_CHAT, 'Say "so".') == [
        {"messages": [
            {"role": "system", "content": 'Say "so".'},
            {"role": "user", "content": p},
            {"role": "assistant", "content": c, "weight": 1},
        ]}
        for p, c in zip(TEXTS["prompt"], TEXTS["completion"])
    ]  # fmt: skip


def test_alpaca_and_its_dataset_info_entry():
    assert lines_of(exports.ALPACA) == [
        {"instruction": p, "input": "", "output": c, "system": "Be careful."}
        for p, c in zip(TEXTS["prompt"], TEXTS["completion"])
    ]
    info = exports.llama_factory_dataset_info([("rag_sft_2026-11-19", "alpaca.jsonl")])
    assert info == {
        "rag_sft_2026-11-19": {
            "file_name": "alpaca.jsonl",
            "formatting": "alpaca",
            "columns": {"prompt": "instruction", "query": "input", "response": "output", "system": "system"},
        }
    }


def test_no_rows_make_an_empty_chunk():
    empty = pa.table({"prompt": pa.array([], pa.string()), "completion": pa.array([], pa.string())})
    assert exports.export_chunk(empty, exports.ALPACA, "s").lines == 0


def test_formats_are_chosen_by_name_or_all():
    assert exports.parse_formats("all") == list(exports.FORMATS)
    assert exports.parse_formats(" alpaca, trl_messages,alpaca ") == ["alpaca", "trl_messages"]
    assert exports.parse_formats("") == []
    with pytest.raises(ValueError, match="sharegpt"):
        exports.parse_formats("sharegpt")
    assert exports.file_name("alpaca") == "alpaca.jsonl" and exports.file_name("alpaca", "train") == "train.alpaca.jsonl"
