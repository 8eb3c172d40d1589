"""Completion strategies (SPEC.md rule 6): the seam where the LLM strategy plugs in.

A strategy turns a batch of annotated samples (with their prompts) into one outcome per
sample: the completion text, or the reason there is none, so a sample is never exported
with a made-up completion.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from rag_sft.core import rules


@dataclass(frozen=True)
class CompletionOutcome:
    completion: str | None
    failure_reason: str | None = None


class CompletionStrategy(Protocol):
    name: str
    model: str | None

    def complete(self, samples: Sequence[Mapping], prompts: Sequence[str]) -> list[CompletionOutcome]:
        ...


class NaiveCompletion:
    """No LLM: the label's prefix in front of the original answer."""

    name = "naive"
    model = None

    def complete(self, samples: Sequence[Mapping], prompts: Sequence[str]) -> list[CompletionOutcome]:
        return [
            CompletionOutcome(rules.naive_completion(s["label"], s["original_answer"], s["language"]))
            for s in samples
        ]
