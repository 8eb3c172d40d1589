"""The LLM completion strategy's rules, free of I/O (docs/spec.md, "Rule 6: Completion").

What is asked (the correction request), how an answer is recognised in the cache (its key),
how long to wait before a retry, what an answer means (usable, or why not), and the figures
a materialization reports. `io/llm/llm_completion.py` does the talking.
"""

from __future__ import annotations

import hashlib
import math
import unicodedata
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import orjson

from rag_sft.core import rules

STRATEGY = "llm"

# Why a sample has no corrected answer. The first six may pass on a retry.
RATE_LIMITED = "rate_limited"
SERVER_ERROR = "server_error"
TIMEOUT = "timeout"
CONNECTION_ERROR = "connection_error"
MALFORMED_RESPONSE = "malformed_response"
INVALID_FORMAT = "invalid_format"  # an answer, but not in the format asked for (a judge's JSON verdict)
EMPTY_CHOICES = "empty_choices"
EMPTY_COMPLETION = "empty_completion"
TRUNCATED = "truncated"  # stopped by max_tokens: half an answer is not a correction
TOO_LONG = "too_long"  # longer than max_tokens allows (`max_completion_chars`): the server ignored the cap
REFUSED = "refused"
BAD_REQUEST = "bad_request"
BUDGET_EXHAUSTED = "budget_exhausted"
# The model a completion is credited to when the server's reply names none.
UNKNOWN_MODEL = "unknown"
# A token is rarely more than 4 characters of English or 1-2 of Chinese: a reply over
# max_tokens x 8 characters was not bounded by max_tokens at all (a gateway ignoring it, a
# runaway repetition) and is filtered as `too_long`, whatever its finish_reason says.
CHARS_PER_TOKEN_LIMIT = 8
RETRYABLE = frozenset({RATE_LIMITED, SERVER_ERROR, TIMEOUT, CONNECTION_ERROR, MALFORMED_RESPONSE, INVALID_FORMAT})

DEFAULT_SYSTEM_PROMPT = (
    "You correct the answers of a retrieval-augmented question answering service. Follow the "
    "instruction in the request, rely only on the documents given, and reply with the corrected "
    "answer alone, in the language of the question, without preamble."
)

_FEEDBACK_HEADINGS = {
    rules.ZH: {
        "answer": "【待纠正的回答】",
        "checks": "【评估得分】",
        "suggestion": "【评估建议】",
        "reply": "请只输出纠正后的回答。",
    },
    rules.EN: {
        "answer": "Answer to correct:",
        "checks": "Evaluator scores:",
        "suggestion": "Evaluator suggestion:",
        "reply": "Reply with the corrected answer only.",
    },
}


@dataclass(frozen=True)
class LlmSettings:
    model: str
    temperature: float = 0.2
    max_tokens: int = 512
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    include_feedback: bool = True  # the original answer and the evaluator's scores and suggestion


def correction_messages(
    prompt: str,
    language: str,
    original_answer: str | None,
    checks: Sequence[tuple[str, float]] | None,
    suggestion: str | None,
    settings: LlmSettings,
) -> list[dict[str, str]]:
    """The chat request for one sample: the sample's own prompt (docs, the label's instruction,
    the question), then what the evaluator said about the answer being corrected."""
    user = prompt
    if settings.include_feedback:
        headings = _FEEDBACK_HEADINGS.get(language, _FEEDBACK_HEADINGS[rules.EN])
        parts = [prompt]
        if original_answer and original_answer.strip():
            parts.append(f"{headings['answer']}\n{original_answer}")
        if checks:
            scores = ", ".join(f"{name}: {_score_text(value)}" for name, value in checks)
            parts.append(f"{headings['checks']}\n{scores}")
        if suggestion and suggestion.strip():
            parts.append(f"{headings['suggestion']}\n{suggestion}")
        parts.append(headings["reply"])
        user = rules.PROMPT_SEPARATOR.join(parts)
    return [{"role": "system", "content": settings.system_prompt}, {"role": "user", "content": user}]


def _score_text(value: float | None) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.2f}"


def request_key(endpoint: str, settings: LlmSettings, messages: Sequence[Mapping[str, str]]) -> str:
    """sha256 of (endpoint, model, parameters, messages): the same question to the same model at
    the same endpoint with the same parameters is answered once, whichever day or run asks it.
    The endpoint counts: two servers may serve different models under one name."""
    payload = {
        "endpoint": endpoint.rstrip("/"),
        "model": settings.model,
        "temperature": settings.temperature,
        "max_tokens": settings.max_tokens,
        "messages": list(messages),
    }
    return hashlib.sha256(orjson.dumps(payload, option=orjson.OPT_SORT_KEYS)).hexdigest()


@dataclass(frozen=True)
class RetryPolicy:
    max_retries: int = 5
    backoff_base_s: float = 0.5
    backoff_max_s: float = 30.0
    max_retry_after_s: float = 60.0  # a server asking for a longer wait is waited this long


def retry_delay(retry: int, retry_after: float | None, policy: RetryPolicy, random: float) -> float:
    """Seconds before retry number `retry` (0 for the first): exponential backoff with full
    jitter (`random` in [0, 1)), never shorter than the server's Retry-After."""
    backoff = random * min(policy.backoff_max_s, policy.backoff_base_s * 2**retry)
    if retry_after is None:
        return backoff
    return max(min(max(retry_after, 0.0), policy.max_retry_after_s), backoff)


def parse_retry_after(headers: Mapping[str, str], now: datetime | None = None) -> float | None:
    """Seconds from `retry-after-ms` or `Retry-After` (seconds or an HTTP date); None if absent
    or unreadable. `headers` keys in lower case."""
    milliseconds = headers.get("retry-after-ms")
    if milliseconds is not None:
        try:
            return max(float(milliseconds) / 1000, 0.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max((when - (now or datetime.now(UTC))).total_seconds(), 0.0)


@dataclass(frozen=True)
class Answer:
    text: str
    model: str
    prompt_tokens: int
    completion_tokens: int


def max_completion_chars(max_tokens: int) -> int:
    """The longest reply accepted for a request capped at `max_tokens`."""
    return max_tokens * CHARS_PER_TOKEN_LIMIT


def reply_text(content: object) -> str | None:
    """The text of a reply's `content`: a string, or the text parts of a list of parts joined
    (gateways answering in the multi-part form, `[{"type": "text", "text": ...}, ...]`); None
    when there is none. ValueError for any other shape, or a part that is not text (an image,
    audio: no correction): the reply is a `malformed_response`."""
    if content is None or isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise ValueError(f"content is a {type(content).__name__}, not text or a list of parts")
    texts = []
    for part in content:
        if isinstance(part, dict):
            kind, text = part.get("type"), part.get("text")
        else:  # a parsed part object
            kind, text = getattr(part, "type", None), getattr(part, "text", None)
        if kind != "text" or not isinstance(text, str):
            raise ValueError(f"content holds a part of type {kind!r}, not text")
        texts.append(text)
    return "".join(texts)


# Characters that show nothing and are not whitespace to str.isspace: zero-width and other
# format characters (category Cf: U+200B, U+200D, U+2060, U+FEFF, ...), and blank letters.
_BLANK_LETTERS = frozenset("\u115f\u1160\u2800\u3164\uffa0")


def is_blank(text: str) -> bool:
    """True when the text shows nothing: whitespace and invisible characters only."""
    return all(ch.isspace() or ch in _BLANK_LETTERS or unicodedata.category(ch) in ("Cf", "Cc") for ch in text)


def judge_choice(
    content: str | None, finish_reason: str | None, refusal: str | None, max_chars: int | None = None
) -> str | None:
    """Why the first choice is not a usable correction, or None when it is. `max_chars`: the
    longest text accepted (`max_completion_chars` of the request's max_tokens)."""
    if refusal or finish_reason == "content_filter":
        return REFUSED
    if finish_reason == "length":
        return TRUNCATED
    if content is None or is_blank(content):
        return EMPTY_COMPLETION
    if max_chars is not None and len(content) > max_chars:
        return TOO_LONG
    return None


@dataclass
class CompletionStats:
    """What one materialization asked of the endpoint and got back."""

    samples: int = 0  # samples that needed a completion
    distinct_requests: int = 0  # distinct (model, parameters, prompt) among them
    cache_hits: int = 0  # distinct requests answered from the cache
    requests: int = 0  # HTTP requests made, retries included
    retries: Counter = field(default_factory=Counter)  # by the reason of the failed attempt
    failures: Counter = field(default_factory=Counter)  # distinct requests left without an answer
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latencies_s: list[float] = field(default_factory=list)  # of answered HTTP requests

    def metadata(self) -> dict:
        return {
            "samples": self.samples,
            "distinct_requests": self.distinct_requests,
            "cache_hits": self.cache_hits,
            "requests": self.requests,
            "retries": dict(sorted(self.retries.items())),
            "failures": dict(sorted(self.failures.items())),
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "latency_s": latency_percentiles(self.latencies_s),
        }


def latency_percentiles(latencies: Sequence[float]) -> dict[str, float | None]:
    """p50/p90/p99/max by the nearest-rank method (an observed latency, never an interpolation)."""
    if not latencies:
        return {"p50": None, "p90": None, "p99": None, "max": None}
    ordered = sorted(latencies)

    def rank(q: float) -> float:
        return round(ordered[max(math.ceil(q * len(ordered)) - 1, 0)], 4)

    return {"p50": rank(0.5), "p90": rank(0.9), "p99": rank(0.99), "max": round(ordered[-1], 4)}
