"""The `llm` strategy with the real `openai` client against a local OpenAI-compatible server."""

from __future__ import annotations

from contextlib import contextmanager

import openai
import orjson
import pytest

from rag_sft.core import ingest, llm, tables
from rag_sft.core.ingest import SourceLine
from rag_sft.core.llm import LlmSettings, RetryPolicy
from rag_sft.core.rules import RuleSettings
from rag_sft.io.llm.completion_cache import CompletionCache
from rag_sft.io.llm.llm_completion import CompletionEndpointError, LlmCompletion, RunBudget, redacted_url
from rag_sft.testing.openai_server import corrected_answer, running_stub
from rag_sft_tests.helpers import event

API_KEY = "sk-test-never-shown-7f3a9c"


def samples_for(questions: list[str]):
    """Annotated samples (and their prompts) for events with these questions, all confident."""
    lines = [SourceLine("f", n, orjson.dumps(event(f"r{n}", question=q, score=0.9))) for n, q in enumerate(questions, 1)]
    accepted = next(iter(ingest.ingest(lines, 32768, 10_000, ingest.IngestCounts()))).accepted
    annotated = tables.annotate_batch(accepted, RuleSettings())
    return annotated, tables.prompts_batch(annotated, RuleSettings())


@contextmanager
def llm_strategy(stub, cache_path, timeout=5.0, concurrency=16, retry=None, budget=None, sleeps=None):
    client = openai.OpenAI(base_url=stub.base_url, api_key=API_KEY, timeout=timeout, max_retries=0)
    cache = CompletionCache(cache_path)
    sleep = sleeps.append if sleeps is not None else (lambda seconds: None)
    strategy = LlmCompletion(
        client,
        LlmSettings(model="teacher"),
        cache,
        concurrency=concurrency,
        retry=retry or RetryPolicy(backoff_base_s=0.01),
        budget=budget,
        sleep=sleep,
    )
    try:
        yield strategy
    finally:
        strategy.close()
        cache.close()


def user_messages(strategy, samples, prompts) -> list[str]:
    _, requests = strategy._requests(samples, prompts)
    return [messages[1]["content"] for messages in requests.values()]


def test_happy_path_answers_every_sample_once_per_distinct_request(tmp_path):
    questions = [f"问题{n}:退款需要多久?" for n in range(12)]
    samples, prompts = samples_for([*questions, questions[0], questions[1], questions[0]])
    with running_stub() as stub, llm_strategy(stub, tmp_path / "cache.sqlite") as strategy:
        outcome = strategy.complete(samples, prompts)
        figures = strategy.metadata()
        served = stub.state.served
    contents = [m[1]["content"] for m in (strategy._requests(samples, prompts)[1].values())]
    expected = {corrected_answer("teacher", content) for content in contents}
    assert set(outcome.completions.to_pylist()) == expected
    assert outcome.completions.to_pylist()[12] == outcome.completions.to_pylist()[0]
    assert outcome.failure_reasons == [None] * 15
    assert outcome.models.to_pylist() == ["teacher"] * 15
    assert len(served) == 12  # the three repeated questions were not asked again
    assert {request.authorization for request in served} == {f"Bearer {API_KEY}"}
    assert figures["samples"] == 15 and figures["distinct_requests"] == 12 and figures["requests"] == 12
    assert figures["cache_hits"] == 0 and figures["failures"] == {} and figures["retries"] == {}
    assert figures["prompt_tokens"] > 0 and figures["completion_tokens"] > 0
    assert figures["latency_s"]["p50"] is not None and figures["latency_s"]["max"] >= figures["latency_s"]["p50"]


def test_transient_faults_are_retried_until_answered(tmp_path):
    questions = ["Q-429 退款?", "Q-500 退款?", "Q-timeout 退款?", "Q-malformed 退款?", "Q-drop 退款?", "Q-ok 退款?"]
    samples, prompts = samples_for(questions)
    faults = {
        "Q-429": ["rate_limit:0.01"],
        "Q-500": ["server_error", "server_error"],
        "Q-timeout": ["timeout:1.5"],
        "Q-malformed": ["malformed"],
    }
    with running_stub(faults=faults) as stub, llm_strategy(stub, tmp_path / "c.sqlite", timeout=0.5) as strategy:
        outcome = strategy.complete(samples, prompts)
        figures = strategy.metadata()
    assert outcome.failure_reasons == [None] * 6
    assert None not in outcome.completions.to_pylist()
    assert figures["retries"] == {"malformed_response": 1, "rate_limited": 1, "server_error": 2, "timeout": 1}
    assert figures["requests"] == 6 + 5
    assert figures["failures"] == {}


def test_retry_after_is_waited_before_the_next_attempt(tmp_path):
    samples, prompts = samples_for(["Q-429 退款?"])
    sleeps: list[float] = []
    faults = {"Q-429": ["rate_limit:2.5", "rate_limit:0"]}
    with running_stub(faults=faults) as stub, llm_strategy(stub, tmp_path / "c.sqlite", sleeps=sleeps) as strategy:
        outcome = strategy.complete(samples, prompts)
    assert outcome.failure_reasons == [None]
    assert sleeps[0] == 2.5  # the server's Retry-After, longer than the jittered 0.01 s backoff
    assert 0 <= sleeps[1] <= 0.02  # Retry-After 0: just the backoff
    assert [request.status for request in stub.state.served] == [429, 429, 200]


def test_permanent_failures_are_reasons_not_completions_and_are_not_cached(tmp_path):
    cases = {
        "Q-choices": ("empty_choices", llm.EMPTY_CHOICES),
        "Q-empty": ("empty", llm.EMPTY_COMPLETION),
        "Q-cut": ("truncated", llm.TRUNCATED),
        "Q-refuse": ("refusal", llm.REFUSED),
        "Q-400": ("bad_request", llm.BAD_REQUEST),
    }
    questions = [f"{marker} 退款?" for marker in cases] + ["Q-down 退款?", "Q-fine 退款?"]
    faults = {marker: [fault] for marker, (fault, _) in cases.items()} | {"Q-down": ["server_error"] * 10}
    samples, prompts = samples_for(questions)
    retry = RetryPolicy(max_retries=2, backoff_base_s=0.01)
    with running_stub(faults=faults) as stub, llm_strategy(stub, tmp_path / "c.sqlite", retry=retry) as strategy:
        outcome = strategy.complete(samples, prompts)
        figures = strategy.metadata()
        cached = len(strategy.cache)
    expected = [reason for _, reason in cases.values()] + [llm.SERVER_ERROR, None]
    assert outcome.failure_reasons == expected
    assert outcome.completions.to_pylist()[:6] == [None] * 6 and outcome.completions[6].as_py()
    assert outcome.models.to_pylist()[:6] == [None] * 6
    assert figures["requests"] == 5 + 3 + 1  # one each, three for the retried 500s, one answer
    assert figures["failures"] == {reason: 1 for reason in expected if reason}
    assert cached == 1  # only the answer: a failed request is asked again next time


def test_a_second_run_answers_from_the_cache_without_requests(tmp_path):
    questions = [f"问题{n}?" for n in range(20)]
    samples, prompts = samples_for(questions)
    with running_stub() as stub:
        with llm_strategy(stub, tmp_path / "c.sqlite") as first:
            before = first.complete(samples, prompts)
        with llm_strategy(stub, tmp_path / "c.sqlite") as second:
            after = second.complete(samples, prompts)
            figures = second.metadata()
        assert len(stub.state.served) == 20
    assert after.completions.equals(before.completions)
    assert figures["cache_hits"] == 20 and figures["requests"] == 0


def test_no_more_than_the_configured_requests_are_open_at_once(tmp_path):
    samples, prompts = samples_for([f"问题{n}?" for n in range(64)])
    with running_stub(latency_s=0.1) as stub:
        with llm_strategy(stub, tmp_path / "a.sqlite", concurrency=16) as strategy:
            strategy.complete(samples, prompts)
        wide = stub.state.max_in_flight
        stub.state.max_in_flight = 0
        with llm_strategy(stub, tmp_path / "b.sqlite", concurrency=3) as strategy:
            strategy.complete(samples, prompts)
        narrow = stub.state.max_in_flight
    assert 8 <= wide <= 16
    assert 2 <= narrow <= 3


def test_a_rejected_key_stops_the_run_with_a_message_that_does_not_repeat_it(tmp_path):
    samples, prompts = samples_for([f"问题{n}?" for n in range(200)])
    with running_stub(faults={"": ["unauthorized"] * 1000}) as stub:
        with llm_strategy(stub, tmp_path / "c.sqlite", concurrency=4) as strategy, pytest.raises(
            CompletionEndpointError
        ) as raised:
            strategy.complete(samples, prompts)
        requests = len(stub.state.served)
    message = str(raised.value)
    assert "401" in message and "OPENAI_API_KEY" in message and "teacher" in message
    assert API_KEY not in message and API_KEY[-6:] not in message
    assert requests < 50  # stopped early, not once per sample


def test_a_request_budget_leaves_the_rest_for_the_next_run(tmp_path):
    samples, prompts = samples_for([f"问题{n}?" for n in range(10)])
    with running_stub() as stub:
        with llm_strategy(stub, tmp_path / "c.sqlite", concurrency=1, budget=RunBudget(max_requests=3)) as strategy:
            outcome = strategy.complete(samples, prompts)
            figures = strategy.metadata()
        assert len(stub.state.served) == 3
        tokens_cap = RunBudget(max_tokens=1)
        with llm_strategy(stub, tmp_path / "c.sqlite", concurrency=1, budget=tokens_cap) as strategy:
            again = strategy.complete(samples, prompts)
    assert outcome.failure_reasons.count(llm.BUDGET_EXHAUSTED) == 7
    assert figures["failures"] == {llm.BUDGET_EXHAUSTED: 7}
    # A token cap stops once the tokens reported so far reach it: one request, then no more.
    assert again.failure_reasons.count(None) == 4 and again.failure_reasons.count(llm.BUDGET_EXHAUSTED) == 6


def test_urls_are_shown_without_credentials():
    assert redacted_url("https://user:pw@gateway.example:8443/v1?key=abc#x") == "https://gateway.example:8443/v1"
    assert redacted_url("http://127.0.0.1:8000/v1") == "http://127.0.0.1:8000/v1"


def test_replies_in_parts_huge_invisible_or_unnamed_are_read_or_filtered_with_their_reason(tmp_path):
    """What gateways really send: content as a list of text parts (read), parts that are not text
    (malformed), a reply far beyond max_tokens (too long), only zero-width characters (empty),
    no `model` (the completion is credited to `unknown`, not to the model asked for)."""
    cases = {
        "Q-parts": ["parts"],
        "Q-image": ["image_parts"] * 3,  # retried like any malformed reply, then filtered
        "Q-huge": ["huge"],  # 5,000,000 characters for max_tokens 512
        "Q-blank": ["invisible"],
        "Q-anonymous": ["no_model"],
    }
    samples, prompts = samples_for([f"{marker} 退款?" for marker in cases])
    retry = RetryPolicy(max_retries=2, backoff_base_s=0.01)
    with running_stub(faults=cases) as stub, llm_strategy(stub, tmp_path / "c.sqlite", retry=retry) as strategy:
        outcome = strategy.complete(samples, prompts)
        figures = strategy.metadata()
    contents = user_messages(strategy, samples, prompts)
    assert outcome.failure_reasons == [None, llm.MALFORMED_RESPONSE, llm.TOO_LONG, llm.EMPTY_COMPLETION, None]
    completions = outcome.completions.to_pylist()
    assert completions[0] == corrected_answer("teacher", contents[0])  # the two text parts joined
    assert completions[4] == corrected_answer("teacher", contents[4])
    assert completions[1:4] == [None] * 3
    assert outcome.models.to_pylist() == ["teacher", None, None, None, llm.UNKNOWN_MODEL]
    assert figures["failures"] == {"malformed_response": 1, "too_long": 1, "empty_completion": 1}
    assert figures["retries"] == {"malformed_response": 2}
    assert llm.max_completion_chars(512) == 4096
