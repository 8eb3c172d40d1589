"""Personal data never reaches a prompt, an LLM request or an export; the raw text survives only
in raw_events (and the dead letter), or nowhere with `redact_raw`."""

import pandas as pd

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
        "URL_SECRET": 0, "EMAIL": 1, "ID_NUMBER": 0, "BANK_CARD": 0, "IP": 0, "PHONE": 20,
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
