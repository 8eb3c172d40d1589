"""The LLM strategy's rules: the correction request, its key, retry timing, answer judgement."""

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from rag_sft.core import llm, rules
from rag_sft.core.llm import LlmSettings, RetryPolicy

SETTINGS = LlmSettings(model="teacher-1")
ENDPOINT = "http://127.0.0.1:8199/v1"
PROMPT_ZH = "[文档1] 退款在七个工作日内到账。\n\n" + rules.correction_instruction("factuality_error", "zh") + "\n\n问题\n退款需要多久?"


def test_the_request_is_the_samples_prompt_then_the_evaluators_feedback_in_its_language():
    messages = llm.correction_messages(
        PROMPT_ZH, "zh", "三天内一定到账。", [("factuality", 0.3), ("relevance", float("nan"))], "引用文档", SETTINGS
    )
    assert [m["role"] for m in messages] == ["system", "user"]
    assert messages[0]["content"] == llm.DEFAULT_SYSTEM_PROMPT
    user = messages[1]["content"]
    assert user.startswith(PROMPT_ZH)
    assert "【待纠正的回答】\n三天内一定到账。" in user
    assert "【评估得分】\nfactuality: 0.30, relevance: n/a" in user
    assert "【评估建议】\n引用文档" in user
    assert user.endswith("请只输出纠正后的回答。")

    english = llm.correction_messages("Docs...\n\nQuestion\nHow long?", "en", "Surely 3 days.", None, "", SETTINGS)
    assert "Answer to correct:\nSurely 3 days." in english[1]["content"]
    assert "Evaluator" not in english[1]["content"]  # no checks, blank suggestion: no empty sections


def test_without_feedback_the_request_is_the_prompt_alone():
    bare = LlmSettings(model="m", include_feedback=False, system_prompt="Fix it.")
    messages = llm.correction_messages(PROMPT_ZH, "zh", "答", [("f", 0.1)], "建议", bare)
    assert messages == [{"role": "system", "content": "Fix it."}, {"role": "user", "content": PROMPT_ZH}]


def test_requests_differ_per_label_as_the_instructions_do():
    other_label = PROMPT_ZH.replace(
        rules.correction_instruction("factuality_error", "zh"), rules.correction_instruction("overconfidence", "zh")
    )
    first = llm.correction_messages(PROMPT_ZH, "zh", "答", None, None, SETTINGS)
    second = llm.correction_messages(other_label, "zh", "答", None, None, SETTINGS)
    assert first != second
    assert llm.request_key(ENDPOINT, SETTINGS, first) != llm.request_key(ENDPOINT, SETTINGS, second)


def test_the_cache_key_covers_endpoint_model_parameters_and_prompt_only():
    messages = llm.correction_messages(PROMPT_ZH, "zh", "答", None, None, SETTINGS)
    key = llm.request_key(ENDPOINT, SETTINGS, messages)
    assert key == llm.request_key(ENDPOINT + "/", LlmSettings(model="teacher-1"), [dict(m) for m in messages])
    assert len(key) == 64
    variants = [
        LlmSettings(model="teacher-2"),
        LlmSettings(model="teacher-1", temperature=0.7),
        LlmSettings(model="teacher-1", max_tokens=256),
    ]
    assert len({key, *(llm.request_key(ENDPOINT, v, messages) for v in variants)}) == 4
    changed = [messages[0], {"role": "user", "content": messages[1]["content"] + " "}]
    assert llm.request_key(ENDPOINT, SETTINGS, changed) != key
    # Another server serving a model of the same name does not share answers.
    assert llm.request_key("http://10.0.0.7:8000/v1", SETTINGS, messages) != key


def test_backoff_is_exponential_with_full_jitter_and_capped():
    policy = RetryPolicy(backoff_base_s=0.5, backoff_max_s=4.0)
    assert [llm.retry_delay(retry, None, policy, 0.999999) for retry in range(5)] == pytest.approx(
        [0.5, 1.0, 2.0, 4.0, 4.0], abs=1e-5
    )
    assert llm.retry_delay(3, None, policy, 0.0) == 0.0
    assert llm.retry_delay(2, None, policy, 0.5) == pytest.approx(1.0)


def test_retry_after_is_a_floor_up_to_its_cap():
    policy = RetryPolicy(backoff_base_s=0.5, backoff_max_s=30, max_retry_after_s=10)
    assert llm.retry_delay(0, 3.0, policy, 0.9) == 3.0  # jittered backoff 0.45 < Retry-After
    assert llm.retry_delay(6, 3.0, policy, 0.9) == pytest.approx(27.0)  # backoff already longer
    assert llm.retry_delay(0, 600.0, policy, 0.1) == 10.0
    assert llm.retry_delay(0, -5.0, policy, 0.0) == 0.0


def test_retry_after_headers_in_seconds_milliseconds_and_http_dates():
    now = datetime(2026, 11, 20, 12, 0, 0, tzinfo=UTC)
    assert llm.parse_retry_after({"retry-after": "2"}, now) == 2.0
    assert llm.parse_retry_after({"retry-after": "0.25"}, now) == 0.25
    assert llm.parse_retry_after({"retry-after-ms": "1500", "retry-after": "9"}, now) == 1.5
    later = format_datetime(now + timedelta(seconds=7), usegmt=True)
    assert llm.parse_retry_after({"retry-after": later}, now) == 7.0
    earlier = format_datetime(now - timedelta(seconds=7), usegmt=True)
    assert llm.parse_retry_after({"retry-after": earlier}, now) == 0.0
    assert llm.parse_retry_after({"retry-after": "soon"}, now) is None
    assert llm.parse_retry_after({}, now) is None


@pytest.mark.parametrize(
    ("content", "finish_reason", "refusal", "reason"),
    [
        ("A corrected answer.", "stop", None, None),
        ("  padded  ", None, None, None),
        ("", "stop", None, llm.EMPTY_COMPLETION),
        ("   \n", "stop", None, llm.EMPTY_COMPLETION),
        (None, "stop", None, llm.EMPTY_COMPLETION),
        ("\u200b", "stop", None, llm.EMPTY_COMPLETION),  # zero-width characters show nothing
        (" \u200b\u200c\u200d\n\u2060\ufeff\u3000\u3164 ", "stop", None, llm.EMPTY_COMPLETION),
        ("\u200b答\u200b", "stop", None, None),
        ("Half an ans", "length", None, llm.TRUNCATED),
        (None, "stop", "I can't help with that.", llm.REFUSED),
        ("", "content_filter", None, llm.REFUSED),
    ],
)
def test_only_a_complete_nonempty_unrefused_answer_counts(content, finish_reason, refusal, reason):
    assert llm.judge_choice(content, finish_reason, refusal) == reason


def test_a_reply_far_beyond_max_tokens_is_too_long():
    limit = llm.max_completion_chars(512)
    assert llm.judge_choice("x" * limit, "stop", None, limit) is None
    assert llm.judge_choice("x" * (limit + 1), "stop", None, limit) == llm.TOO_LONG
    assert llm.judge_choice("答" * 1_700_000, "stop", None, limit) == llm.TOO_LONG


def test_a_reply_in_parts_is_its_text_parts_joined_and_other_parts_are_malformed():
    assert llm.reply_text("plain") == "plain" and llm.reply_text(None) is None
    assert llm.reply_text([{"type": "text", "text": "退款"}, {"type": "text", "text": "七天到账"}]) == "退款七天到账"
    assert llm.reply_text([]) == ""
    for content in ([{"type": "image_url", "image_url": {"url": "x"}}], [{"type": "text"}], ["text"], {"text": "x"}, 3):
        with pytest.raises(ValueError):
            llm.reply_text(content)


def test_latency_percentiles_are_observed_values():
    assert llm.latency_percentiles([]) == {"p50": None, "p90": None, "p99": None, "max": None}
    values = [i / 100 for i in range(1, 101)]  # 0.01 .. 1.00
    assert llm.latency_percentiles(list(reversed(values))) == {"p50": 0.5, "p90": 0.9, "p99": 0.99, "max": 1.0}
    assert llm.latency_percentiles([0.2]) == {"p50": 0.2, "p90": 0.2, "p99": 0.2, "max": 0.2}
