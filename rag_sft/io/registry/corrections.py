"""A person's corrected answers: `<data_dir>/corrections/*.jsonl`, one row per answer,
{"sample_id": ..., "completion": ...} (docs/training.md, "The training dataset"). Each replaces the completion of the
record with that sample_id in training datasets, marked `human` (`core/corrections.py`); the
daily exports are left as they are. Files are read in name order: a later row for the same
sample_id wins, so a new file can revise an older one."""

from __future__ import annotations

import orjson

from rag_sft.io.storage.location import Location


def read_corrections(folder: Location) -> dict[str, str]:
    """sample_id -> the corrected completion; {} when the folder does not exist."""
    if not folder.is_dir():
        return {}
    corrections: dict[str, str] = {}
    for path in sorted(p for p in folder.iterdir() if p.name.endswith(".jsonl")):
        for number, line in enumerate(path.read_bytes().splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = orjson.loads(line)
                sample_id, completion = row["sample_id"], row["completion"]
            except (orjson.JSONDecodeError, KeyError, TypeError) as error:
                raise ValueError(f"{path}:{number}: not a correction ({error!r}); expected {{\"sample_id\", \"completion\"}}") from None
            if not isinstance(sample_id, str) or not isinstance(completion, str) or not completion.strip():
                raise ValueError(f"{path}:{number}: sample_id and completion must be strings, the completion non-empty")
            corrections[sample_id] = completion
    return corrections
