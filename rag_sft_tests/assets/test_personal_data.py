"""Personal data never reaches a prompt, an LLM request or an export; the raw text survives only
in raw_events (and the dead letter), or nowhere with `redact_raw`."""

import pandas as pd

from rag_sft.core import pii
from rag_sft.erasure_job import ERASE_OP, erase_requests_job
from rag_sft_tests.helpers import event, write_lines

DAY = "2026-11-19"
PHONE, EMAIL = "13812345678", "zhang.wei@example.com"


def personal_day(pipeline):
    lines = [event(f"r{n}", question=f"我的手机号 {PHONE} 收不到验证码，第{n}次了", score=0.9) for n in range(20)]
    lines.append(event("r-mail", answer=f"请联系 {EMAIL}", score=0.9))
    lines.append(b'{"request_id": "bad", "question": "' + PHONE.encode() + b'"')  # a broken line with a phone number
    write_lines(pipeline.landing / "e.jsonl", lines)


def texts_of(table_dir) -> str:
    return pd.read_parquet(table_dir).astype(str).to_csv()


def test_prompts_records_and_exports_hold_placeholders_and_the_counts_say_so(pipeline):
    personal_day(pipeline)
    result = pipeline.materialize(DAY)
    for table in ("annotated_samples", "sft_records"):
        text = texts_of(pipeline.data / "warehouse" / table)
        assert PHONE not in text and EMAIL not in text and "<PHONE>" in text and "<EMAIL>" in text
    exported = pipeline.jsonl(DAY).read_text()
    assert PHONE not in exported and EMAIL not in exported and "<PHONE>" in exported
    assert pipeline.metadata(result, "annotated_samples")["personal_data_redacted"] == {
        "URL_SECRET": 0, "SECRET": 0, "EMAIL": 1, "IBAN": 0, "ID_NUMBER": 0, "BANK_CARD": 0, "SSN": 0, "IP": 0, "PHONE": 20,
    }
    # Only the raw tables keep the text as it arrived (for whoever may re-materialize the day).
    assert PHONE in texts_of(pipeline.data / "warehouse" / "raw_events")
    assert PHONE in texts_of(pipeline.data / "warehouse" / "rejected_events")


def test_with_redact_raw_the_raw_text_is_kept_nowhere(pipeline):
    personal_day(pipeline)
    pipeline.materialize(DAY, redact_raw=True)
    for table in ("raw_events", "rejected_events", "annotated_samples", "sft_records"):
        text = texts_of(pipeline.data / "warehouse" / table)
        assert PHONE not in text and EMAIL not in text, table
    assert "<PHONE>" in texts_of(pipeline.data / "warehouse" / "rejected_events")


# (where it goes, the text with the personal data, the raw value that must not come out)
EVASIONS = [
    ("question", "手机号１３８１２３４５６７８收不到验证码", "１３８１２３４５６７８"),
    ("question", "邮箱 li.na\u200b@example.com 收不到发票", "li.na\u200b@example.com"),
    ("question", "请发到 john.smith[at]example.com 谢谢", "john.smith[at]example.com"),
    ("question", "邮箱是 liu1990＠qq.com 麻烦查一下", "liu1990＠qq.com"),
    ("question", "联系 张三@example.cn 处理退款", "张三@example.cn"),
    ("question", "退款到 IBAN DE89 3704 0044 0532 0130 00 可以吗", "DE89 3704 0044 0532 0130 00"),
    ("question", "my SSN is 078-05-1120, is the form safe?", "078-05-1120"),
    ("question", "身份证号 110105 19491231 002X 实名失败", "110105 19491231 002X"),
    ("answer", "请用 sk-proj-4f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c 调用接口", "sk-proj-4f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c"),
    ("answer", "配置 DB_PASSWORD=hunter2xyz 后重启", "hunter2xyz"),
    ("answer", "Header: Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0", "eyJhbGciOiJIUzI1NiJ9"),
    ("doc", "用户 wang\u200bfang@corp.example.cn 的工单", "wang\u200bfang@corp.example.cn"),
    ("label", "客户 13912345678 投诉", "13912345678"),
    ("request_id", "req-13712345678", "13712345678"),
    ("doc_id", "kb-li.na@example.org", "li.na@example.org"),
]
TECHNICAL = "std::vector 和 Foo::Bar::new() 在 1.2.3.4 版本里为什么不同？另见 {address}"
ADDRESS = "fe80::1ff:fe23:4567:890a"


def test_an_event_with_evasions_yields_records_without_the_raw_values(pipeline):
    lines = []
    for n, (where, text, _) in enumerate(EVASIONS):
        docs = [{"id": f"kb-{n}", "content": f"第{n}份文档：退款在七个工作日内到账。", "score": 0.9}]
        fields = {"question": f"问题{n}：退款需要多久？", "score": 0.9, "docs": docs}
        if where in ("question", "answer"):
            fields[where] = text
        elif where == "doc":
            docs[0]["content"] = text
        elif where == "doc_id":
            docs[0]["id"] = text
        elif where == "label":
            fields["labels"] = [text]
        lines.append(event(text if where == "request_id" else f"r{n}", **fields))
    lines.append(event("r-tech", question=TECHNICAL.format(address=ADDRESS), score=0.9, docs=[{"id": "kb-tech", "content": "C++ 作用域。", "score": 0.9}]))
    write_lines(pipeline.landing / "e.jsonl", lines)
    pipeline.materialize(DAY)

    exported = pipeline.jsonl(DAY).read_text()
    outputs = {
        "records.jsonl": exported,
        **{table: texts_of(pipeline.data / "warehouse" / table) for table in ("annotated_samples", "sft_records")},
    }
    for name, text in outputs.items():
        for where, _, raw in EVASIONS:
            assert raw not in text, (name, where, raw)
    assert exported.count("\n") == len(lines)  # every event exported, none lost to redaction
    assert TECHNICAL.format(address="<IP>") in exported  # code and versions survive, only the address goes
    assert pii.pseudonym("req-13712345678") in exported and "kb-tech" not in exported


def test_a_request_id_exported_as_its_pseudonym_is_erased_by_the_id_the_user_gives(pipeline):
    personal_id = "req-13712345678"
    write_lines(pipeline.landing / "e.jsonl", [event(personal_id, score=0.9), event("r-other", question="发票怎么开？", score=0.9)])
    pipeline.materialize(DAY)
    assert pii.pseudonym(personal_id) in pipeline.jsonl(DAY).read_text()

    erase_requests_job.execute_in_process(
        run_config={"ops": {ERASE_OP: {"config": {"request_ids": [personal_id]}}}},
        resources=pipeline.resources(),
        instance=pipeline.instance,
    )
    exported = pipeline.jsonl(DAY).read_text()
    assert pii.pseudonym(personal_id) not in exported and "r-other" in exported
    for table in ("annotated_samples", "sft_records"):
        assert pii.pseudonym(personal_id) not in texts_of(pipeline.data / "warehouse" / table), table
