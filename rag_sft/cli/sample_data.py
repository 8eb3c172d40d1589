"""`make run`'s sample data: seven generated days in the project's own landing folder, and the
stand-in corrector that writes their corrections.

Generated events carry no right answer, and a model must never be trained on the naive
completion (the wrong answer behind a label prefix). So that the demo trains only on
completions that can be right, `rag-sft run` corrects the sample days with the `llm` completion
strategy: the real `openai` client, over HTTP, against the project's local OpenAI-compatible
stub. The stub's correction is the opening sentences of the best-ranked retrieved document:
grounded in what was retrieved, and no teacher; it is labelled "stand-in-corrector" wherever it
shows (the records' metadata, the run's summary). Only generated sample files get it (a marker
beside the landing folder lists them): a user's events are never corrected by it, and an
explicit RAG_SFT_COMPLETION_STRATEGY or `completions` run config wins.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import orjson

from rag_sft import settings
from rag_sft.cli.generate import write_days
from rag_sft.core.generator import GeneratorSettings, recent_days

STAND_IN_MODEL = "stand-in-corrector"
# The key the stand-in is sent (it checks none); set in this process only, never the user's key.
STAND_IN_KEY_ENV = settings.STAND_IN_CORRECTOR_KEY.variable
# A fixed port when free, so that a second `make run` finds its answers in the answer cache
# (the cache key names the endpoint).
STAND_IN_PORT = 8199
SAMPLE_DAYS = 7
STAND_IN_NOTE = (
    "Sample events: their corrections come from the stand-in corrector (a local stub answering with the opening of "
    "the best-ranked document, through the real openai client), so the demo trains only on completions that can be "
    "right. Your own events are never corrected by it: set RAG_SFT_COMPLETION_STRATEGY=llm and an endpoint."
)


def _marker(landing: Path) -> Path:
    # Beside the folder, not in it: a file in it that is not JSON Lines is listed as ignored.
    return landing.with_name(f".{landing.name}.sample-events.json")


def write_sample_days(landing: Path, events_per_day: int) -> list[Path]:
    """The sample week, and the marker that names its files as generated."""
    settings = GeneratorSettings(events_per_day=events_per_day, malformed_share=0.01, duplicate_share=0.005)
    paths = write_days(landing, recent_days(SAMPLE_DAYS), settings)
    _marker(landing).write_bytes(orjson.dumps({"files": sorted(path.name for path in paths)}))
    return paths


def holds_only_sample_events(landing: Path) -> bool:
    """Whether every file in the folder is one `write_sample_days` generated."""
    marker = _marker(landing)
    if not marker.is_file() or not landing.is_dir():
        return False
    generated = set(orjson.loads(marker.read_bytes())["files"])
    present = {path.name for path in landing.iterdir()}
    return bool(present) and present <= generated


def wants_stand_in(landing: Path, run_config: dict) -> bool:
    """Sample events only, and no completion strategy chosen by the user."""
    # Set at all, even empty, is a choice.
    chosen = settings.COMPLETION_STRATEGY.variable in os.environ or "completions" in run_config.get("resources", {})
    return not chosen and holds_only_sample_events(landing)


@contextmanager
def stand_in_corrector(run_config: dict) -> Iterator[dict]:
    """The run config with the `completions` resource pointed at the stand-in, while it serves."""
    from rag_sft.testing.openai_server import OpenAIStub

    try:
        stub = OpenAIStub(port=STAND_IN_PORT).start()
    except OSError:  # the port is taken: any free one (answers are then asked again, not cached)
        stub = OpenAIStub().start()
    before = os.environ.get(STAND_IN_KEY_ENV)
    os.environ[STAND_IN_KEY_ENV] = "stand-in"
    config = {"strategy": "llm", "base_url": stub.base_url, "model": STAND_IN_MODEL, "api_key": {"env": STAND_IN_KEY_ENV}}
    try:
        yield {**run_config, "resources": {**run_config.get("resources", {}), "completions": {"config": config}}}
    finally:
        stub.stop()
        if before is None:
            os.environ.pop(STAND_IN_KEY_ENV, None)
        else:
            os.environ[STAND_IN_KEY_ENV] = before
