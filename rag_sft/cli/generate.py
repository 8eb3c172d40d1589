"""Sample event files: what `rag-sft generate` writes, and what the benches and tests start from."""

from __future__ import annotations

from datetime import date
from pathlib import Path

from rag_sft.core.generator import GeneratorSettings, day_lines


def write_days(out: Path, days: list[date], settings: GeneratorSettings) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for day in days:
        path = out / f"events-{day.isoformat()}.jsonl"
        with path.open("wb") as handle:
            for line in day_lines(day, settings):
                handle.write(line)
        paths.append(path)
    return paths
