"""Small Arrow helpers shared by the batch transforms."""

from __future__ import annotations

from collections.abc import Mapping

import pyarrow as pa
import pyarrow.compute as pc

from rag_sft.core import rules


def lookup_by_label(labels: pa.Array, languages: pa.Array, table: Mapping[str, Mapping]) -> pa.Array:
    """`table[language].get(label, table[language][None])` over two columns (instructions,
    naive prefixes: per-language tables keyed by label, None holding the default)."""
    keyed = [label for label in table[rules.ZH] if label is not None]
    texts = pa.array([table[language].get(label) for language in rules.LANGUAGES for label in [*keyed, None]])
    label_index = pc.index_in(labels, value_set=pa.array(keyed, pa.string())).fill_null(len(keyed))
    language_index = pc.index_in(languages, value_set=pa.array(rules.LANGUAGES))
    return texts.take(pc.add(pc.multiply(language_index, len(keyed) + 1), label_index))
