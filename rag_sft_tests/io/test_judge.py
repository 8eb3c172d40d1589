"""The LLM judge through the real openai client against the local server scripting its verdicts,
and the gate's decisions on what it says."""

from contextlib import contextmanager

import openai
import orjson

from rag_sft.core.llm import LlmSettings, RetryPolicy
from rag_sft.core.model_comparison import (
    JUDGE_RUBRIC,
    JUDGED_LABELS,
    GateSettings,
    LabelAgreement,
    compare,
    judged_gate,
    paired_test,
)
from rag_sft.io.llm.completion_cache import CompletionCache
from rag_sft.io.llm.judge import JudgeItem, audit_agreement, judge, judged_run, read_audit_set
from rag_sft.io.llm.llm_completion import LlmCompletion
from rag_sft.testing.openai_server import running_stub

N = 40


@contextmanager
def judge_client(stub, tmp_path, max_retries=2):
    client = openai.OpenAI(base_url=stub.base_url, api_key="sk-judge", timeout=5, max_retries=0)
    cache = CompletionCache(tmp_path / "cache.sqlite")
    completion = LlmCompletion(
        client,
        LlmSettings(model="judge", temperature=0.0, max_tokens=256, system_prompt=JUDGE_RUBRIC),
        cache,
        retry=RetryPolicy(max_retries=max_retries, backoff_base_s=0.001),
    )
    try:
        yield completion
    finally:
        completion.close()
        cache.close()


def items(model: str) -> list[JudgeItem]:
    return [JudgeItem(f"question {i}?", (f"doc about {i}",), f"<{model} answer {i}>") for i in range(N)]


def script(stub, model: str, label: str, questions: range) -> None:
    """`label` on these questions' answers, no label on the others' (unless scripted before)."""
    for i in range(N):
        marker = f"<{model} answer {i}>"
        labels = [*stub.state.verdicts.get(marker, {}).get("labels", []), *([label] if i in questions else [])]
        stub.script_verdict(marker, labels, 0.2 if labels else 0.9)


# An audit set on which the judge agrees with the humans on every label: the numbers decide.
TRUSTED = {label: LabelAgreement(0.9, 10, 40) for label in JUDGED_LABELS}


def gate(candidate, in_use, in_use_name="v0001", settings=GateSettings()):
    test = paired_test(candidate, in_use, settings.primary_metric)
    return judged_gate(test, compare(candidate, in_use), in_use_name, settings, TRUSTED)


def decide(stub, tmp_path, settings=GateSettings()):
    with judge_client(stub, tmp_path) as client:
        candidate = judged_run(client, "candidate", items("cand"), [0.1] * N, [5] * N)
        in_use = judged_run(client, "v0001", items("cur"), [0.1] * N, [5] * N)
    return gate(candidate, in_use, settings=settings)


def test_a_candidate_clearly_better_than_the_model_in_use_is_promoted(tmp_path):
    with running_stub() as stub:
        script(stub, "cur", "factuality_error", range(20))
        script(stub, "cand", "factuality_error", range(3))
        decision = decide(stub, tmp_path)
    assert decision.promote, decision.reason
    assert decision.reason.startswith("better than the model in use: factuality_error: 17 fixed, 0 broken vs v0001 on 40 questions")


def test_better_than_the_base_but_worse_than_current_is_rejected_naming_metric_and_interval(tmp_path):
    with running_stub() as stub:
        script(stub, "base", "factuality_error", range(30))
        script(stub, "cur", "factuality_error", range(4))
        script(stub, "cand", "factuality_error", range(16))
        with judge_client(stub, tmp_path) as client:
            base = judged_run(client, "base", items("base"), [0.1] * N, [5] * N)
            candidate = judged_run(client, "candidate", items("cand"), [0.1] * N, [5] * N)
            current = judged_run(client, "v0001", items("cur"), [0.1] * N, [5] * N)
    assert gate(candidate, base, "the base model").promote
    decision = gate(candidate, current)
    assert not decision.promote
    assert decision.reason.startswith("worse than the model in use: factuality_error: 0 fixed, 12 broken vs v0001 on 40 questions, exact McNemar p = ")


def test_a_tie_is_no_significant_improvement(tmp_path):
    with running_stub() as stub:
        script(stub, "cur", "factuality_error", range(10))
        script(stub, "cand", "factuality_error", range(5, 15))
        decision = decide(stub, tmp_path)
    assert not decision.promote and decision.reason.startswith("no significant improvement: factuality_error: 5 fixed, 5 broken")


def test_a_label_regressing_beyond_the_tolerance_is_named(tmp_path):
    with running_stub() as stub:
        script(stub, "cur", "factuality_error", range(20))
        script(stub, "cand", "overconfidence", range(20, 30))
        decision = decide(stub, tmp_path)
    assert not decision.promote
    assert "but overconfidence rate +0.250 (95% CI upper bound +0.400) vs v0001: not under the margin 0.05" in decision.reason


def test_a_malformed_verdict_is_retried_then_counted_as_a_failure_never_guessed(tmp_path):
    with running_stub() as stub:
        stub.script("answer 0>", "not_json")  # one bad verdict, then a good one
        stub.script("answer 1>", "not_json", "not_json", "not_json")  # bad on every try
        with judge_client(stub, tmp_path, max_retries=2) as client:
            judged = judge(client, items("cand")[:3])
            again = judge(client, items("cand")[:3])
        requests = stub.state.stats()["requests"]
    assert judged.verdicts[0] is not None and judged.verdicts[1] is None and judged.verdicts[2] is not None
    assert dict(judged.failures) == {"invalid_format": 1}
    assert requests == 2 + 3 + 1 + 1  # the failed verdict is not cached: asked again, answered
    assert again.verdicts[1] is not None


def test_kappa_under_the_threshold_blocks_promotion(tmp_path):
    audit = tmp_path / "audit.jsonl"
    rows = [{"question": f"q{i}?", "docs": [{"content": f"d{i}"}], "answer": f"<audit answer {i}>",
             "labels": ["factuality_error"] if i < 10 else []} for i in range(20)]
    audit.write_bytes(b"\n".join(orjson.dumps(row) for row in rows))
    audit_items = read_audit_set(audit)
    with running_stub() as stub:
        script(stub, "cur", "factuality_error", range(20))
        script(stub, "cand", "factuality_error", range(2))
        # The judge agrees with the humans on 12 of 20 answers: kappa 0.2.
        for i in range(20):
            said = ["factuality_error"] if (i < 10) == (i % 5 < 3) else []
            stub.script_verdict(f"<audit answer {i}>", said if i < 10 else (["factuality_error"] if i % 5 < 2 else []), 0.5)
        with judge_client(stub, tmp_path) as client:
            kappa = audit_agreement(client, audit_items)
            candidate = judged_run(client, "candidate", items("cand"), [0.1] * N, [5] * N)
            current = judged_run(client, "v0001", items("cur"), [0.1] * N, [5] * N)
    differences, test = compare(candidate, current), paired_test(candidate, current, "factuality_error")
    trusted = {label: LabelAgreement(0.9, 10, 20) for label in JUDGED_LABELS}
    assert judged_gate(test, differences, "v0001", GateSettings(), trusted).promote  # the numbers alone would promote
    decision = judged_gate(test, differences, "v0001", GateSettings(), kappa)
    assert kappa["factuality_error"].kappa < 0.6 and kappa["factuality_error"].positives == 10
    assert not decision.promote and decision.review
    assert "the judge is not trusted (Cohen's kappa with the audit set, minimum 0.6): factuality_error: kappa 0.20" in decision.reason
