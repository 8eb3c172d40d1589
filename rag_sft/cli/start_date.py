"""The first partition day for `make run` and `make ui`: the first day of the source's events,
so the UI lists the days there are (7 partitions for 7 days of data, not every day since
2025-01-01) and backfilling "all missing" launches no run for a day before the data.

It is kept in `$DAGSTER_HOME/rag_sft_start_date` and only ever moves earlier: the partition set
stays the same across runs, and a day that was a partition stays one when its file goes. An
explicit RAG_SFT_START_DATE wins.
"""

from __future__ import annotations

import os
from datetime import date
from pathlib import Path

from rag_sft import settings
from rag_sft.core.generator import recent_days

STORED = "rag_sft_start_date"
SAMPLE_DAYS = 7  # what `rag-sft run` generates into an empty landing folder


def start_date(home: Path, first_event_day: date | None) -> str:
    """The partitions' first day: the earliest of the one stored in `home` and the source's
    first event day (with no events: the first sample day `rag-sft run` will generate); stored."""
    stored_file = home / STORED
    candidates = [first_event_day or recent_days(SAMPLE_DAYS)[0]]
    if stored_file.is_file():
        candidates.append(date.fromisoformat(stored_file.read_text().strip()))
    start = min(candidates).isoformat()
    home.mkdir(parents=True, exist_ok=True)
    stored_file.write_text(start + "\n")
    return start


def cmd_start_date(_args) -> int:
    if settings.START_DATE.raw():
        print(settings.START_DATE.raw())
        return 0
    from rag_sft.definitions import defs
    from rag_sft.io.sources.lines import SourceUnavailable

    try:
        days = defs.resources["event_source"].open(defs.resources["warehouse"].state_dir()).days_present()
    except SourceUnavailable:
        days = None  # `rag-sft run` reports it
    print(start_date(Path(os.environ["DAGSTER_HOME"]), min(days) if days else None))
    return 0
