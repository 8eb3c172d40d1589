"""The end of `make run`: the daemon's training sensor fires on the sample data, for real.

The Dagster daemon is started on the project's instance (as `make ui` does), its sensor counts
the new samples and launches `lora_training_job`; this waits for that run, stops the daemon
and reports the model version, the A/B table and the gate's decision. When no judge is
configured (RAG_SFT_JUDGE_BASE_URL), the local OpenAI-compatible stub serves as a *stand-in*
judge for the daemon's runs: deterministic, and labelled as a stand-in wherever it shows. The
daemon trains only on completions that can be right (the sample days' come from the stand-in
corrector, `cli/sample_data.py`); with none, its sensor skips and the report gives the reason.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import orjson

SENSOR = "lora_training_sensor"
FIRST_TICK_WITHIN_S = 300  # daemon start-up, code server load and the first evaluation
FINISHED = {"SUCCESS", "FAILURE", "CANCELED"}


@dataclass
class TrainingReport:
    outcome: str  # "trained", "skipped", "failed", "timed out"
    detail: str
    run_id: str | None = None
    version: dict | None = None


def corpus_texts(data_dir: Path, limit: int = 4000) -> list[str]:
    """Prompts and completions of the exported JSONL (the tokenizer's training text)."""
    texts: list[str] = []
    for path in sorted((data_dir / "datasets" / "sft").glob("date=*/records.jsonl")):
        for line in path.read_bytes().splitlines():
            record = orjson.loads(line)
            texts += [record["prompt"], record["completion"]]
            if len(texts) >= limit:
                return texts
    return texts


def ensure_tiny_base(base_model: str, data_dir: Path) -> str | None:
    """Build the tiny demo base model when `base_model` is its (missing) default folder."""
    target = Path(base_model)
    if target.exists() or target != data_dir / "models" / "base" / "tiny-llama":
        return None
    texts = corpus_texts(data_dir)
    if not texts:
        return None
    from rag_sft.training.tiny_base import build_tiny_base_model

    build_tiny_base_model(texts, target)
    return str(target)


@contextmanager
def judge_environment() -> Iterator[dict[str, str]]:
    """The environment of the daemon: the user's, plus the stand-in judge when none is set."""
    from rag_sft import settings

    if settings.JUDGE_BASE_URL.raw():
        yield dict(os.environ)
        return
    from rag_sft.testing.openai_server import running_stub

    with running_stub() as stub:
        yield {
            **os.environ,
            settings.JUDGE_BASE_URL.variable: stub.base_url,
            settings.JUDGE_MODEL.variable: "stand-in-judge",
            settings.JUDGE_API_KEY.variable: "stand-in",
            settings.JUDGE_STAND_IN.variable: "1",
        }


def train_through_sensor(instance, log_path: Path, timeout_s: float = 1800) -> TrainingReport:
    with judge_environment() as env:
        return _train_through_sensor(instance, log_path, timeout_s, env)


def _train_through_sensor(instance, log_path: Path, timeout_s: float, env: dict[str, str]) -> TrainingReport:
    import dagster as dg
    from dagster._core.scheduler.instigation import InstigatorType

    started = time.time()
    daemon_bin = Path(sys.executable).with_name("dagster-daemon")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        daemon = subprocess.Popen(
            ["env", "--default-signal=INT,TERM", str(daemon_bin), "run", "-w", "workspace.yaml"],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=env,
        )
    try:
        run = None
        while time.time() - started < timeout_s:
            if daemon.poll() is not None:
                return TrainingReport("failed", f"the Dagster daemon exited ({daemon.returncode}); see {log_path}")
            if run is None:
                runs = instance.get_runs(
                    filters=dg.RunsFilter(
                        tags={"dagster/sensor_name": SENSOR}, created_after=datetime.fromtimestamp(started)
                    ),
                    limit=1,
                )
                run = runs[0] if runs else None
                if run is None:
                    tick = _tick_since(instance, InstigatorType.SENSOR, started)
                    if tick is not None and tick.status.value == "SKIPPED":
                        return TrainingReport("skipped", tick.skip_reason or "skipped")
                    if tick is not None and tick.status.value == "FAILURE":
                        return TrainingReport("failed", f"the sensor failed: {tick.error.message if tick.error else ''}")
                    if tick is None and time.time() - started > FIRST_TICK_WITHIN_S:
                        return TrainingReport("failed", f"the sensor did not tick within {FIRST_TICK_WITHIN_S}s; see {log_path}")
            else:
                run = instance.get_run_by_id(run.run_id)
                if run.status.value in FINISHED:
                    return _report(run)
            time.sleep(1.0)
        return TrainingReport("timed out", f"no finished training run after {timeout_s:.0f}s; see {log_path}")
    finally:
        _stop(daemon)


def _tick_since(instance, sensor_type, since: float):
    """The sensor's latest tick if it came after `since` (and is not still being evaluated)."""
    for state in instance.all_instigator_state(instigator_type=sensor_type):
        if state.instigator_name != SENSOR:
            continue
        ticks = instance.get_ticks(state.instigator_origin_id, state.selector_id, limit=1)
        if ticks and ticks[0].timestamp >= since and ticks[0].status.value != "STARTED":
            return ticks[0]
    return None


def _report(run) -> TrainingReport:
    from rag_sft.io.registry.model_registry import ModelRegistry
    from rag_sft.resources import Warehouse

    registry = ModelRegistry(Warehouse().models_dir())
    version = next((entry for entry in registry.versions() if entry.get("run_id") == run.run_id), None)
    if run.status.value != "SUCCESS":
        return TrainingReport("failed", f"training run {run.run_id} ended {run.status.value}", run.run_id, version)
    return TrainingReport("trained", "", run.run_id, version)


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)  # the daemon and the code server it started
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def format_training(report: TrainingReport) -> str:
    lines = ["", "Training (lora_training_sensor on the Dagster daemon):"]
    if report.outcome != "trained" or report.version is None:
        lines.append(f"  {report.outcome}: {report.detail}" + (f" (run {report.run_id})" if report.run_id else ""))
        return "\n".join(lines)
    v = report.version
    lines += [
        f"  run {report.run_id}, launched by the sensor",
        (
            f"  model version {v['version']} on {len(v.get('days', []))} day(s), "
            f"dataset version {v.get('dataset_version')} ({v.get('dataset_hash', '')[:12]})"
        ),
        f"  train loss {v.get('train_loss')}, eval loss {v.get('eval_loss')} "
        f"(in use, {v.get('in_use')}: {v.get('in_use_eval_loss')}; base model {v.get('base_eval_loss')})",
        f"  judge: {v.get('judge') or 'none configured (the eval-loss gate)'}",
        "  generation (greedy, batched): " + ", ".join(f"{name} {rate} answers/s" for name, rate in (v.get("answers_per_s") or {}).items()),
    ]
    if v.get("ab_table"):
        lines += [
            "  A/B table (rates with 95% intervals; change = candidate - model in use, paired bootstrap; "
            "the gate's rows: fixed and broken questions, exact McNemar p):"
        ]
        lines += [f"    {line}" for line in v["ab_table"].splitlines()]
    lines.append(f"  gate: {v.get('status')}: {v.get('reason')}")
    return "\n".join(lines)
