"""The LLM judge: verdicts on answers from any OpenAI-compatible endpoint.

It goes through the completions client (`io/llm/llm_completion.py`): the same pool of concurrent
requests, retries, answer cache and key handling. A verdict that is not the JSON the rubric
asks for is retried like an unreadable body, then counted as a failure; it is never guessed.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from rag_sft.core.llm import Answer
from rag_sft.core.model_comparison import ModelRun, Verdict, audit_kappa, judge_messages, parse_verdict
from rag_sft.io.llm.llm_completion import LlmCompletion


@dataclass(frozen=True)
class JudgeItem:
    question: str
    docs: tuple[str, ...]
    answer: str
    reference: str | None = None  # the corrected answer, where one exists


@dataclass
class Judged:
    verdicts: list[Verdict | None]
    failures: Counter = field(default_factory=Counter)
    prompt_tokens: int = 0
    completion_tokens: int = 0


def judge(client: LlmCompletion, items: Sequence[JudgeItem]) -> Judged:
    """One verdict per item (None where the judge failed, counted by reason in `failures`).
    Tokens count every verdict, cached ones included: what judging these answers costs."""
    keys, requests = [], {}
    for item in items:
        messages = judge_messages(item.question, item.docs, item.answer, item.reference, client.settings.system_prompt)
        key = client.request_key(messages)
        keys.append(key)
        requests.setdefault(key, messages)
    outcomes = client.ask_many(requests, accept=lambda text: parse_verdict(text) is not None)
    judged = Judged([])
    for key in keys:
        outcome = outcomes[key]
        if isinstance(outcome, Answer):
            judged.verdicts.append(parse_verdict(outcome.text))
            judged.prompt_tokens += outcome.prompt_tokens
            judged.completion_tokens += outcome.completion_tokens
        else:
            judged.verdicts.append(None)
            judged.failures[outcome] += 1
    return judged


@dataclass(frozen=True)
class AuditItem:
    item: JudgeItem
    labels: frozenset[str]  # a human's labels


def read_audit_set(path: Path) -> list[AuditItem]:
    """A JSONL of answers with human labels: `question`, `docs` (texts or {content}), `answer`,
    `labels`, optionally `reference`."""
    items = []
    for number, line in enumerate(path.read_bytes().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = orjson.loads(line)
            docs = tuple(doc["content"] if isinstance(doc, dict) else str(doc) for doc in row.get("docs", []))
            item = JudgeItem(row["question"], docs, row["answer"], row.get("reference"))
            items.append(AuditItem(item, frozenset(row["labels"])))
        except (orjson.JSONDecodeError, KeyError, TypeError) as error:
            raise ValueError(f"{path}:{number}: not an audit item ({error})") from None
    return items


def judged_run(
    client: LlmCompletion, name: str, items: Sequence[JudgeItem], latencies_s: Sequence[float], tokens: Sequence[int]
) -> ModelRun:
    """One model's answers judged: its column of the A/B table."""
    judged = judge(client, items)
    return ModelRun(
        name, judged.verdicts, list(latencies_s), list(tokens), judged.prompt_tokens, judged.completion_tokens, dict(judged.failures)
    )


def audit_agreement(client: LlmCompletion, audit: Sequence[AuditItem]) -> dict[str, float]:
    """Cohen's kappa per label of the judge against the audit set's human labels. Verdicts come
    from the answer cache, so only a changed audit set or judge makes requests."""
    judged = judge(client, [a.item for a in audit])
    return audit_kappa([a.labels for a in audit], judged.verdicts)
