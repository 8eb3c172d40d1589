"""Realistic sample quality events, deterministic for a seed.

Sizes follow the issue: 3-8 docs of 200-800 characters with scores, answers of 100-600
characters, most questions in Chinese and some in English, a label mix like a RAG service's,
and optionally malformed lines and duplicated request_ids mixed in.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import orjson

_ZH_TOPICS = ["退款政策", "会员积分", "物流配送", "发票开具", "账户安全", "产品保修", "API 限流", "数据备份",
              "套餐升级", "跨境支付", "隐私设置", "企业认证", "接口鉴权", "订单取消", "库存同步", "客服工单"]
_ZH_QUESTIONS = ["{t}的具体规则是什么?", "如何申请{t}?", "{t}需要多长时间?", "{t}有哪些限制条件?",
                 "为什么我的{t}没有生效?", "{t}和旧版本相比有什么变化?", "{t}在海外用户中是否适用?"]
_ZH_SENTENCES = [
    "根据最新发布的服务条款,用户在完成实名认证后方可使用该功能。",
    "系统会在每日凌晨两点进行批量处理,处理结果将通过站内信通知。",
    "如遇高峰期,处理时间可能延长至三个工作日,请耐心等待。",
    "该规则自本季度起生效,此前提交的申请仍按旧规则执行。",
    "企业用户可以在管理后台的“设置”页面中统一配置相关参数。",
    "若订单已进入配送环节,则需要先联系承运方拦截包裹。",
    "接口调用频率超过上限时,服务端会返回 429 状态码并附带重试时间。",
    "历史数据默认保留九十天,超过期限的数据将被自动归档。",
    "积分有效期为十二个月,到期前七天系统会发送提醒短信。",
    "发票抬头一经开具无法修改,如需更正请先申请红冲。",
    "保修范围不包括人为损坏以及未经授权的拆修行为。",
    "跨境支付需额外收取百分之一点五的汇率转换手续费。",
    "为保障账户安全,连续五次输入错误密码后账户将被临时锁定。",
    "客服工单的平均响应时间为四小时,紧急工单会优先处理。",
    "库存数据每十五分钟同步一次,极端情况下可能存在短暂延迟。",
    "升级套餐后,新的额度会在下一个计费周期开始时生效。",
    "用户可以随时在隐私中心撤回对个性化推荐的授权。",
    "海外用户暂不支持该项服务,具体开放时间以官方公告为准。",
    "部分地区因政策原因,相关功能的使用受到一定限制。",
    "在提交申请前,请确认所填写的联系方式真实有效。",
]
_EN_TOPICS = ["refund policy", "loyalty points", "shipping times", "invoice requests", "account security",
              "warranty coverage", "API rate limits", "data retention", "plan upgrades", "SSO setup"]
_EN_QUESTIONS = ["What are the rules for {t}?", "How do I request {t}?", "How long does {t} take?",
                 "Why is my {t} not applied?", "What changed in {t} this quarter?"]
_EN_SENTENCES = [
    "Under the current terms of service, the feature is available after identity verification. ",
    "Batch processing runs daily at 2 a.m. UTC and results are sent by in-app message. ",
    "During peak periods processing may take up to three business days. ",
    "The rule applies from this quarter; earlier requests follow the previous policy. ",
    "Enterprise admins can configure these settings centrally in the admin console. ",
    "When the rate limit is exceeded the API answers 429 with a Retry-After header. ",
    "History is kept for ninety days and archived automatically after that. ",
    "Points expire after twelve months and a reminder is sent seven days before. ",
    "The warranty does not cover accidental damage or unauthorized repairs. ",
    "Accounts are locked temporarily after five failed password attempts. ",
]
_ZH_SUGGESTIONS = ["回答应严格引用文档内容。", "补充文档中提到的时间限制。", "避免绝对化表述。", "紧扣用户问题作答。"]
_EN_SUGGESTIONS = ["Quote the documents strictly.", "Mention the time limits in the documents.",
                   "Avoid absolute wording.", "Stay on the user's question."]

# Main-label mix of a RAG service's low-scoring answers; an empty list means "unspecified".
_LABEL_MIX = [
    (["factuality_error"], 0.26),
    (["incomplete_answer"], 0.21),
    (["low_relevance"], 0.17),
    (["overconfidence"], 0.14),
    ([], 0.10),
    (["citation_missing"], 0.12),
]
_SECONDARY_LABELS = ["incomplete_answer", "low_relevance", "overconfidence"]

MALFORMED_KINDS = (
    "invalid_json",
    "not_an_object",
    "missing_question",
    "empty_request_id",
    "docs_not_a_list",
    "labels_not_a_list",
    "score_out_of_range",
    "score_not_a_number",
    "bad_timestamp",
    "oversized_answer",
    "invalid_utf8",
)


@dataclass(frozen=True)
class GeneratorSettings:
    events_per_day: int = 1500
    english_share: float = 0.15
    malformed_share: float = 0.0
    duplicate_share: float = 0.0
    factuality_share: float | None = None  # force a skewed day: this share of factuality_error
    seed: int = 7
    oversized_chars: int = 40_000


def _text(rng: random.Random, sentences: list[str], low: int, high: int) -> str:
    target = rng.randint(low, high)
    parts: list[str] = []
    length = 0
    while length < target:
        sentence = rng.choice(sentences)
        parts.append(sentence)
        length += len(sentence)
    return "".join(parts)[:target]


def _labels(rng: random.Random, factuality_share: float | None) -> list[str]:
    if factuality_share is not None and rng.random() < factuality_share:
        labels = ["factuality_error"]
    else:
        roll = rng.random() * sum(weight for _, weight in _LABEL_MIX)
        labels = _LABEL_MIX[-1][0]
        for candidate, weight in _LABEL_MIX:
            roll -= weight
            if roll < 0:
                labels = candidate
                break
        labels = list(labels)
    if labels and rng.random() < 0.25:
        extra = rng.choice(_SECONDARY_LABELS)
        if extra not in labels:
            labels.append(extra)
    return labels


def event(rng: random.Random, day: date, index: int, settings: GeneratorSettings) -> dict:
    english = rng.random() < settings.english_share
    topics, questions, sentences, suggestions = (
        (_EN_TOPICS, _EN_QUESTIONS, _EN_SENTENCES, _EN_SUGGESTIONS)
        if english
        else (_ZH_TOPICS, _ZH_QUESTIONS, _ZH_SENTENCES, _ZH_SUGGESTIONS)
    )
    docs = []
    for n in range(rng.randint(3, 8)):
        doc = {"id": f"kb-{rng.randint(1, 99999):05d}", "content": _text(rng, sentences, 200, 800)}
        if rng.random() > 0.05:  # a few retrievers leave the score out
            doc["score"] = round(rng.uniform(0.2, 0.95), 4)
        docs.append(doc)
    # Low-scoring answers only (the service logs score < 0.7); about a quarter fall under the
    # confidence cut (score < 0.4).
    score = round(rng.triangular(0.15, 0.69, 0.6), 4)
    seconds = rng.randint(0, 86_399)
    timestamp = datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(seconds=seconds)
    case = rng.getrandbits(32)
    # Each user asks about their own case (a ticket), as real users do: without it the 162
    # question templates would be 162 questions, each trained on once (docs/spec.md, "Rule 13: One sample per
    # question"). The ticket reuses the request id's random bits, so every other drawn value is as before.
    question = rng.choice(questions).format(t=rng.choice(topics))
    question += f" (ticket {case:08X})" if english else f"（工单 {case:08X}）"
    return {
        "request_id": f"req-{day:%Y%m%d}-{index:07d}-{case:08x}",
        "question": question,
        "docs": docs,
        "answer": _text(rng, sentences, 100, 600),
        "evaluation": {
            "score": score,
            "labels": _labels(rng, settings.factuality_share),
            "checks": {
                "factuality": round(rng.random(), 3),
                "completeness": round(rng.random(), 3),
                "relevance": round(rng.random(), 3),
                "overconfidence": round(rng.random(), 3),
            },
            "suggestion": rng.choice(suggestions),
        },
        "timestamp": timestamp.strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def malformed_line(rng: random.Random, good: dict, kind: str, settings: GeneratorSettings) -> bytes:
    bad = orjson.loads(orjson.dumps(good))
    if kind == "invalid_json":
        return orjson.dumps(good)[:-40]
    if kind == "not_an_object":
        return orjson.dumps([good["request_id"], good["question"]])
    if kind == "missing_question":
        del bad["question"]
    elif kind == "empty_request_id":
        bad["request_id"] = ""
    elif kind == "docs_not_a_list":
        bad["docs"] = "see knowledge base"
    elif kind == "labels_not_a_list":
        bad["evaluation"]["labels"] = "factuality_error"
    elif kind == "score_out_of_range":
        bad["evaluation"]["score"] = 1.7
    elif kind == "score_not_a_number":
        bad["evaluation"]["score"] = "low"
    elif kind == "bad_timestamp":
        bad["timestamp"] = "yesterday at noon"
    elif kind == "oversized_answer":
        bad["answer"] = "很长的回答。" * (settings.oversized_chars // 6 + 1)
    elif kind == "invalid_utf8":
        return orjson.dumps(bad).replace(b'"answer":"', b'"answer":"\xff\xfe', 1)
    return orjson.dumps(bad)


def day_lines(day: date, settings: GeneratorSettings) -> Iterator[bytes]:
    """The JSON Lines of one day of events (each ends with a newline)."""
    rng = random.Random(f"{settings.seed}-{day.isoformat()}")
    previous: list[bytes] = []
    for index in range(settings.events_per_day):
        roll = rng.random()
        good = event(rng, day, index, settings)
        if roll < settings.malformed_share:
            line = malformed_line(rng, good, MALFORMED_KINDS[index % len(MALFORMED_KINDS)], settings)
        elif roll < settings.malformed_share + settings.duplicate_share and previous:
            line = rng.choice(previous)
        else:
            line = orjson.dumps(good)
            if len(previous) < 64:
                previous.append(line)
        yield line + b"\n"


def recent_days(count: int, today: date | None = None) -> list[date]:
    """The `count` whole UTC days before today, oldest first."""
    today = today or datetime.now(UTC).date()
    return [today - timedelta(days=offset) for offset in range(count, 0, -1)]
