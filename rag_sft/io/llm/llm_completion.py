"""The `llm` completion strategy: corrected answers from an OpenAI-compatible endpoint.

The real `openai` client, with its own retries off: this module retries 429, 5xx, timeouts,
dropped connections and unreadable bodies itself (exponential backoff with full jitter,
Retry-After honoured) so that each retry is counted. Requests of all batches in flight share
one pool of `concurrency` threads, so at most that many are open at once. Answers are looked
up in, and written to, the `CompletionCache` one by one; identical requests within a run are
sent once.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import openai
import pyarrow as pa

from rag_sft.core import llm
from rag_sft.core.completion import CompletionBatch
from rag_sft.core.llm import Answer, CompletionStats, LlmSettings, RetryPolicy
from rag_sft.io.llm.completion_cache import AnswerCache


class CompletionEndpointError(RuntimeError):
    """The endpoint refuses every request (wrong key, no access, unknown model): no sample can
    be corrected, so the materialization stops instead of recording each one as failed."""


@dataclass(frozen=True)
class RunBudget:
    """An optional cap per materialization; 0 means no cap."""

    max_requests: int = 0
    max_tokens: int = 0  # prompt + completion tokens reported by the endpoint


def redacted_url(url: str) -> str:
    """The URL without user, password, query or fragment: safe to show."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


class LlmCompletion:
    name = llm.STRATEGY

    def __init__(
        self,
        client: openai.OpenAI,
        settings: LlmSettings,
        cache: AnswerCache,
        concurrency: int = 16,
        retry: RetryPolicy | None = None,
        budget: RunBudget | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.client = client
        self.settings = settings
        self.cache = cache
        self.retry = retry or RetryPolicy()
        self.budget = budget or RunBudget()
        self.stats = CompletionStats()
        self._sleep = sleep
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=max(concurrency, 1), thread_name_prefix="llm-request")
        self._random = random.Random()
        self._endpoint_error: str | None = None

    # --- the strategy -----------------------------------------------------------------------
    def complete(self, samples: pa.RecordBatch, prompts: pa.Array) -> CompletionBatch:
        keys, requests = self._requests(samples, prompts)
        with self._lock:
            self.stats.samples += len(keys)
        outcomes = self.ask_many(requests)
        texts = [outcome.text if isinstance(outcome, Answer) else None for outcome in map(outcomes.get, keys)]
        models = [outcome.model if isinstance(outcome, Answer) else None for outcome in map(outcomes.get, keys)]
        reasons = [None if isinstance(outcome, Answer) else outcome for outcome in map(outcomes.get, keys)]
        return CompletionBatch(pa.array(texts, pa.string()), reasons, pa.array(models, pa.string()))

    def ask_many(
        self, requests: Mapping[str, list], accept: Callable[[str], bool] | None = None
    ) -> dict[str, Answer | str]:
        """Each distinct request's answer (cached, or asked with retries) or the reason it has
        none. With `accept`, an answer it refuses (a judge's verdict that is not the JSON asked
        for) is retried as `invalid_format` and never cached."""
        cached = self.cache.get_many(requests)
        with self._lock:
            self.stats.distinct_requests += len(requests)
            self.stats.cache_hits += len(cached)
        futures: dict[str, Future] = {
            key: self._pool.submit(self._ask, key, messages, accept)
            for key, messages in requests.items()
            if key not in cached
        }
        outcomes: dict[str, Answer | str] = dict(cached)
        for key, future in futures.items():
            outcomes[key] = future.result()
        if self._endpoint_error:
            raise CompletionEndpointError(self._endpoint_error)
        return outcomes

    def metadata(self) -> dict:
        with self._lock:
            return {"model": self.settings.model, **self.stats.metadata()}

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        self.client.close()

    # --- one request, retried ---------------------------------------------------------------
    def _requests(self, samples: pa.RecordBatch, prompts: pa.Array) -> tuple[list[str], dict[str, list]]:
        """Each row's request key, and the distinct requests by key."""
        keys: list[str] = []
        requests: dict[str, list] = {}
        columns = zip(
            prompts.to_pylist(),
            samples.column("language").to_pylist(),
            samples.column("original_answer").to_pylist(),
            samples.column("checks").to_pylist(),
            samples.column("suggestion").to_pylist(),
        )
        for prompt, language, answer, checks, suggestion in columns:
            messages = llm.correction_messages(prompt, language, answer, checks, suggestion, self.settings)
            key = self.request_key(messages)
            keys.append(key)
            requests.setdefault(key, messages)
        return keys, requests

    def request_key(self, messages: list) -> str:
        """The cache key of a request to this client's endpoint with its settings."""
        endpoint = redacted_url(str(self.client.base_url))  # a password in the URL is no part of where it asks
        return llm.request_key(endpoint, self.settings, messages)

    def _ask(self, key: str, messages: list, accept: Callable[[str], bool] | None = None) -> Answer | str:
        """The answer, cached as soon as it arrives, or the reason of the last failed attempt."""
        reason = llm.BAD_REQUEST
        for attempt in range(self.retry.max_retries + 1):
            if self._endpoint_error:
                return reason  # the run stops with the endpoint's error; this sample is not asked
            if not self._spend_request():
                reason = llm.BUDGET_EXHAUSTED
                break
            outcome, retry_after = self._attempt(messages)
            if isinstance(outcome, Answer) and accept is not None and not accept(outcome.text):
                outcome = llm.INVALID_FORMAT
            if isinstance(outcome, Answer):
                self.cache.put(key, outcome)
                return outcome
            reason = outcome
            if reason not in llm.RETRYABLE or attempt == self.retry.max_retries:
                break
            with self._lock:
                self.stats.retries[reason] += 1
                jitter = self._random.random()
            self._sleep(llm.retry_delay(attempt, retry_after, self.retry, jitter))
        with self._lock:
            self.stats.failures[reason] += 1
        return reason

    def _spend_request(self) -> bool:
        with self._lock:
            stats, budget = self.stats, self.budget
            if budget.max_requests and stats.requests >= budget.max_requests:
                return False
            if budget.max_tokens and stats.prompt_tokens + stats.completion_tokens >= budget.max_tokens:
                return False
            stats.requests += 1
            return True

    def _attempt(self, messages: list) -> tuple[Answer | str, float | None]:
        started = time.perf_counter()
        try:
            response = self.client.chat.completions.create(
                model=self.settings.model,
                messages=messages,
                temperature=self.settings.temperature,
                max_tokens=self.settings.max_tokens,
            )
        except openai.RateLimitError as error:
            return llm.RATE_LIMITED, llm.parse_retry_after(_lower_headers(error.response))
        except openai.InternalServerError as error:
            return llm.SERVER_ERROR, llm.parse_retry_after(_lower_headers(error.response))
        except openai.APITimeoutError:  # before APIConnectionError: it is one
            return llm.TIMEOUT, None
        except openai.APIConnectionError:
            return llm.CONNECTION_ERROR, None
        except (openai.AuthenticationError, openai.PermissionDeniedError, openai.NotFoundError) as error:
            self._stop(error)
            return llm.BAD_REQUEST, None
        except openai.APIStatusError as error:
            if error.status_code in (408, 409):  # request timeout, conflict: worth another try
                return llm.TIMEOUT if error.status_code == 408 else llm.SERVER_ERROR, None
            return llm.BAD_REQUEST, None
        except (ValueError, openai.APIResponseValidationError):  # a body that is not the JSON promised
            return llm.MALFORMED_RESPONSE, None
        latency = time.perf_counter() - started
        try:
            choices = response.choices or []
            usage = response.usage
            prompt_tokens = int(usage.prompt_tokens or 0) if usage else 0
            completion_tokens = int(usage.completion_tokens or 0) if usage else 0
            first = choices[0] if choices else None
            content = llm.reply_text(first.message.content) if first else None
            refusal = getattr(first.message, "refusal", None) if first else None
            finish_reason = first.finish_reason if first else None
            model = getattr(response, "model", None)  # absent when the server names no model
        except (AttributeError, TypeError, IndexError, ValueError):  # ValueError: content that is not text
            return llm.MALFORMED_RESPONSE, None
        with self._lock:
            self.stats.prompt_tokens += prompt_tokens
            self.stats.completion_tokens += completion_tokens
            self.stats.latencies_s.append(latency)
        if first is None:
            return llm.EMPTY_CHOICES, None
        problem = llm.judge_choice(content, finish_reason, refusal, llm.max_completion_chars(self.settings.max_tokens))
        if problem:
            return problem, None
        # The model that wrote it, as the server says; never the name asked for in its place.
        model = model if isinstance(model, str) and model.strip() else llm.UNKNOWN_MODEL
        return Answer(content.strip(), model, prompt_tokens, completion_tokens), None

    def _stop(self, error: openai.APIStatusError) -> None:
        # The server's message may quote part of the key: only the status is repeated.
        self._endpoint_error = (
            f"{redacted_url(str(self.client.base_url))} answered {error.status_code} "
            f"({type(error).__name__}) for model {self.settings.model!r}: check OPENAI_API_KEY, "
            "the base URL and the model name"
        )


def _lower_headers(response) -> dict[str, str]:
    try:
        return {name.lower(): value for name, value in response.headers.items()}
    except AttributeError:
        return {}
