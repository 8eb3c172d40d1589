"""Completion strategies (docs/spec.md, "Rule 6: Completion"): the seam where the LLM strategy plugs in.

A strategy turns a batch of annotated samples and their prompts into one outcome per sample:
the completion text, or the reason there is none, so a sample is never exported with a
made-up completion.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import pyarrow as pa
import pyarrow.compute as pc

from rag_sft.core import rules
from rag_sft.core.columns import lookup_by_label


@dataclass(frozen=True)
class CompletionBatch:
    completions: pa.Array  # string, null where there is no completion
    # Why, for each null completion: a core/llm.py reason (filtered as "completion_<why>", asked
    # again next time) or one of rules.FINAL_COMPLETION_FAILURES (filtered under its own name).
    failure_reasons: list[str | None]
    models: pa.Array  # string: the model that wrote each completion (null when none did)


class CompletionStrategy(Protocol):
    name: str

    def complete(self, samples: pa.RecordBatch, prompts: pa.Array) -> CompletionBatch:
        """`samples` has the `ANNOTATED_SAMPLES` columns; `prompts` one prompt per row.

        Called from several threads at once (one per batch in flight), so it must be thread-safe.
        """
        ...

    def metadata(self) -> dict:
        """What producing the completions took, for the materialization's metadata."""
        ...


class NaiveCompletion:
    """No LLM: the label's prefix in front of the original answer; a blank answer has nothing
    to prefix (a prefix alone would teach the model to answer with nothing)."""

    name = "naive"

    def complete(self, samples: pa.RecordBatch, prompts: pa.Array) -> CompletionBatch:
        answers = samples.column("original_answer")
        prefixes = lookup_by_label(samples.column("label"), samples.column("language"), rules.NAIVE_PREFIXES)
        blank = pc.utf8_is_space(pc.if_else(pc.equal(answers, ""), " ", answers)).to_numpy(zero_copy_only=False)
        completions = pc.binary_join_element_wise(prefixes, answers, "")
        reasons: list[str | None] = [None] * len(completions)
        if blank.any():
            completions = pc.if_else(pa.array(blank), pa.scalar(None, pa.string()), completions)
            reasons = [rules.EMPTY_ANSWER if is_blank else None for is_blank in blank]
        return CompletionBatch(completions, reasons, pa.nulls(len(completions), pa.string()))

    def metadata(self) -> dict:
        return {}
