"""`make bench-llm`: corrected answers for one day of samples from a local server with latency.

The OpenAI-compatible stub runs in its own process (so serving does not compete with the
client for the GIL) and waits `latency` seconds before each answer. `sft_records` is
materialized three times on the same annotated day: one request at a time, `concurrency` at
once (each from an empty cache), and again over the warm cache, which must make no request.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import date
from pathlib import Path

from rag_sft.cli.generate import write_days
from rag_sft.core.generator import GeneratorSettings, recent_days


def _start_stub(latency: float) -> tuple[subprocess.Popen, str]:
    stub = subprocess.Popen(
        [sys.executable, "-m", "rag_sft.testing.openai_server", "--port", "0", "--latency", str(latency)],
        stdout=subprocess.PIPE,
        text=True,
    )
    line = stub.stdout.readline()  # "OpenAI-compatible stub on http://127.0.0.1:PORT/v1 ..."
    return stub, line.split(" on ", 1)[1].split()[0]


def _served(base_url: str) -> int:
    with urllib.request.urlopen(f"{base_url}/stats") as response:
        return json.loads(response.read())["requests"]


def run_llm_bench(samples: int, latency: float, concurrency: int, workdir: Path | None) -> int:
    import dagster as dg

    from rag_sft import settings
    from rag_sft.assets.ingest import raw_events
    from rag_sft.assets.samples import annotated_samples, sft_records
    from rag_sft.cli.runner import QUIET_RUN_CONFIG
    from rag_sft.resources import Completions, EventSource, ExportChecks, SftRules, Triage, Warehouse

    root = workdir or Path(tempfile.mkdtemp(prefix="rag_sft_llm_bench_"))
    day: date = recent_days(1)[0]
    write_days(root / "landing", [day], GeneratorSettings(events_per_day=samples, seed=11))
    stub, base_url = _start_stub(latency)
    os.environ[settings.OPENAI_API_KEY.variable] = "local-stub"  # the key comes from the environment only; this process talks to the stub alone
    try:
        resources = {
            "event_source": EventSource(kind="landing", landing_dir=str(root / "landing")),
            "warehouse": Warehouse(data_dir=str(root / "data")),
            # Every accepted event becomes a sample that needs a correction.
            "sft_rules": SftRules(min_confidence=0.0),
            "export_checks": ExportChecks(confidence_severity="WARN"),
            "triage": Triage(enabled=False),  # no sample goes to retrieval: every one needs a correction
        }
        with dg.instance_for_test() as instance:
            dg.materialize([raw_events, annotated_samples], partition_key=day.isoformat(), instance=instance,
                           resources={**resources, "completions": Completions(strategy="naive")},
                           run_config=QUIET_RUN_CONFIG)

            def timed(label: str, requests_at_once: int, fresh_cache: bool) -> dict:
                if fresh_cache:
                    (root / "data" / "cache" / "completions.sqlite").unlink(missing_ok=True)
                completions = Completions(
                    strategy="llm", base_url=base_url, model="bench-teacher",
                    max_concurrent_requests=requests_at_once,
                )  # fmt: skip
                served_before = _served(base_url)
                started = time.perf_counter()
                result = dg.materialize(
                    [sft_records], partition_key=day.isoformat(), instance=instance,
                    resources={**resources, "completions": completions}, raise_on_error=False,
                    run_config=QUIET_RUN_CONFIG,
                )  # fmt: skip
                wall = time.perf_counter() - started
                metadata = {
                    key: value.value
                    for event in result.get_asset_materialization_events()
                    for key, value in event.event_specific_data.materialization.metadata.items()
                }
                row = {
                    "run": label,
                    "concurrency": requests_at_once,
                    "wall_s": round(wall, 2),
                    "samples": metadata["llm_samples"],
                    "requests": metadata["llm_requests"],
                    "served_by_stub": _served(base_url) - served_before,
                    "cache_hits": metadata["llm_cache_hits"],
                    "exported": metadata["exported"],
                    "latency_p50_s": metadata.get("llm_latency_s_p50"),  # none when every answer came from the cache
                }
                print(json.dumps(row), flush=True)
                return row

            sequential = timed("one at a time", 1, fresh_cache=True)
            concurrent = timed(f"{concurrency} at once", concurrency, fresh_cache=True)
            warm = timed("again, warm cache", concurrency, fresh_cache=False)
        print(
            f"samples={concurrent['samples']} latency_s={latency} sequential_s={sequential['wall_s']} "
            f"concurrent_s={concurrent['wall_s']} speedup={sequential['wall_s'] / concurrent['wall_s']:.1f}x "
            f"second_run_requests={warm['served_by_stub']}"
        )
        return 0 if warm["served_by_stub"] == 0 else 1
    finally:
        stub.terminate()
        stub.wait()
