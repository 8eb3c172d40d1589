"""The embedding pairs' checks (docs/spec.md, "Rule 16: Embedding pairs"), declared on the
`embedding_pairs` asset and daily partitioned like the export checks (rag_sft/checks/export_gate.py,
whose result helper they share; the rules are core/pairs.py). None holds a day back: a flagged
query is kept for review, never dropped (docs/retriever.md, "Checks on the pairs")."""

from __future__ import annotations

import warnings

import dagster as dg

from rag_sft.assets.partitions import daily_partitions
from rag_sft.core.pairs import PAIR_SIMILARITY, PAIRS_DISJOINT, QUERY_LENGTH

ASSET = "embedding_pairs"


def _daily_check(name: str, description: str) -> dg.AssetCheckSpec:
    with warnings.catch_warnings():  # the partitioned spec is a preview API, chosen knowingly (docs/checks.md)
        warnings.simplefilter("ignore", dg.PreviewWarning)
        return dg.AssetCheckSpec(name, asset=ASSET, description=description, partitions_def=daily_partitions)


SPECS = [
    _daily_check(
        PAIR_SIMILARITY,
        "Every measured query-positive similarity is at least triage.min_pair_similarity; warns with the share under "
        "it and the lowest pairs.",
    ),
    _daily_check(
        QUERY_LENGTH,
        "Queries shorter than triage.min_query_length or longer than max_query_length (characters in Chinese, words "
        "in English) are flagged for review (flags column); warns with their count and request_ids, drops none.",
    ),
    _daily_check(PAIRS_DISJOINT, "No text is both a positive and a negative of the same query."),
]
