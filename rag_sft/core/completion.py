"""Completion strategies (SPEC.md rule 6): the seam where the LLM strategy plugs in.

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
    failure_reasons: list[str | None]  # why, for each null completion
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
    """No LLM: the label's prefix in front of the original answer."""

    name = "naive"

    def complete(self, samples: pa.RecordBatch, prompts: pa.Array) -> CompletionBatch:
        prefixes = lookup_by_label(samples.column("label"), samples.column("language"), rules.NAIVE_PREFIXES)
        completions = pc.binary_join_element_wise(prefixes, samples.column("original_answer"), "")
        return CompletionBatch(completions, [None] * len(completions), pa.nulls(len(completions), pa.string()))

    def metadata(self) -> dict:
        return {}
