"""Every environment variable the project reads, declared once: its name, its default, how its
text is read, and what it means (docs/configuration.md, "Environment variables" is generated from
this table: `python -m rag_sft.settings --markdown`).

Where each is read, the `group` says:

- `RESOURCES`: the default of a resource field (`Setting.field`), read whenever the resource is
  built: when the definitions load and again when each run starts. Dagster drops the values a
  resource was constructed with as soon as a run's config sets any of its fields, but it builds the
  resource from the fields' own defaults, so a launchpad change of one setting keeps the
  environment's other settings. That is why a setting is read when it is asked for (`value()`),
  never once at import: a run started after the environment changed sees the new value.
- `DEFINITIONS`: read when the definitions load (the code server, each run, the daemon): the
  partitions, the executors, the schedule and the sensors.
- `INSTANCE`: read by Dagster itself from the instance file deploy/dagster-postgres.yaml.
- `COMMANDS`: read by the `rag-sft` commands.

A variable that is set but empty counts as unset. A secret (a URL that may hold a password, an
API key) is only ever handed on as a `dg.EnvVar`, its variable's name: Dagster resolves it where it
is used, and it never shows in metadata, logs, reprs or the launchpad.

This module imports only a leaf of the project (`core/automation.py`, the standard library alone) at
its top, so any module may import it without an import cycle.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from rag_sft.core.automation import DEFAULT_LAG

RESOURCES = "resources"
DEFINITIONS = "definitions"
INSTANCE = "instance"
COMMANDS = "commands"
GROUPS = {
    RESOURCES: (
        "Resource settings",
        "Each is the default of a resource field (the setting column), read whenever the resource is built: when the "
        "definitions load and again when each run starts. A run config (the launchpad) that sets the field wins; one "
        "that sets another field of the resource keeps it.",
    ),
    DEFINITIONS: (
        "Definitions settings",
        "Read when the definitions load (the code server, each run and the daemon): restart `dagster dev` or the "
        "code server after changing one.",
    ),
    INSTANCE: (
        "The Dagster instance on PostgreSQL",
        "Read by Dagster itself from the instance file `deploy/dagster-postgres.yaml` (`make ui-postgres`; see "
        "[Production](production.md#the-instance-on-postgresql)).",
    ),
    COMMANDS: ("Commands", "Read by the `rag-sft` commands."),
}

DEFAULT_LLM_MODEL = "gpt-4o-mini"
DEFAULT_LLM_BASE_URL = "https://api.openai.com/v1"


def parse_bool(value: str) -> bool:
    """A switch from the environment: true/false, 1/0, yes/no, on/off (any case)."""
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected true or false, got {value!r}")


def is_one(value: str) -> bool:
    """An opt-in: on only when the variable is exactly 1."""
    return value == "1"


def is_not_off(value: str) -> bool:
    """An opt-out: on unless the variable is off (any case)."""
    return value.lower() != "off"


def minutes(value: str) -> timedelta:
    return timedelta(minutes=float(value))


def export_formats(value: str) -> list[str]:
    """`all`, or formats separated by commas."""
    from rag_sft.core.exports import parse_formats  # imported when read: this module stays a leaf

    return parse_formats(value)


@dataclass(frozen=True)
class Setting:
    """One environment variable: `value()` is its parsed value when it is set and not empty, else
    `default` (a secret: a `dg.EnvVar` of it, else `default`)."""

    variable: str
    name: str  # the resource field it is the default of (`warehouse.data_dir`), or what it sets
    description: str
    group: str = RESOURCES
    default: Any = None  # None: computed where it is used, as `shown_default` says
    parse: Callable[[str], Any] = str
    shown_default: str | None = None  # the default as the docs say it, when not `default` itself
    secret: bool = False

    def raw(self) -> str | None:
        """The variable's text, None when it is unset or empty."""
        return os.environ.get(self.variable) or None

    def value(self) -> Any:
        text = self.raw()
        if text is None:
            return self.default
        if self.secret:
            import dagster as dg  # imported when needed: a command's start stays quick

            return dg.EnvVar(self.variable)
        return self.parse(text)

    def field(self, default_factory: Callable[[], Any] | None = None, **constraints: Any) -> Any:
        """A resource field whose default is this setting, read whenever the resource is built
        (`default_factory`: a default computed from it), described as the docs describe it."""
        from pydantic import Field

        return Field(
            default_factory=default_factory or self.value, description=self.field_description(), **constraints
        )

    def default_text(self) -> str:
        if self.shown_default is not None:
            return self.shown_default
        if isinstance(self.default, bool):
            return str(self.default).lower()
        if self.default in ("", [], None):
            return "empty" if self.default == "" else "none"
        return f"`{self.default}`"

    def field_description(self) -> str:
        secret = "the secret " if self.secret else ""
        default = re.sub(r"\[([^\]]+)\]\([^)]+\)", r"\1", self.default_text()).replace("`", "")
        return f"{self.description} Default: {secret}${self.variable}, else {default}."


# Where the events come from (the event_source resource).
SOURCE = Setting(
    "RAG_SFT_SOURCE", "event_source.kind", "'landing': *.jsonl files under landing_dir; 'sql': a SQL table.",
    default="landing",
)
LANDING_DIR = Setting(
    "RAG_SFT_LANDING_DIR", "event_source.landing_dir",
    "Folder searched recursively for *.jsonl, local or s3://bucket/prefix.",
    shown_default="`<data_dir>/landing` (`./data/landing` when data_dir is an object store)",
)
LANDING_PATTERN = Setting(
    "RAG_SFT_LANDING_PATTERN", "event_source.landing_pattern",
    "Regular expression searched in each file name of landing_dir: the files it matches are read, the others are "
    "listed as ignored in each day's metadata and the run summary.",
    shown_default="*.jsonl and *.ndjson in any case, rotated copies (events.jsonl.1) and .gz/.zst",
)
SQL_URL = Setting(
    "RAG_SFT_SQL_URL", "event_source.sql_url",
    "SQLAlchemy URL of the database holding the events table (kind='sql').",
    shown_default="`sqlite:///<data_dir>/events.db`", secret=True,
)

# Where outputs go (the warehouse resource).
DATA_DIR = Setting(
    "RAG_SFT_DATA_DIR", "warehouse.data_dir",
    "Root of all outputs: a folder, or an S3 URI (s3://bucket/prefix; endpoint, region and credentials from the "
    "AWS_* variables).",
    default="data",
)
STATE_DIR = Setting(
    "RAG_SFT_STATE_DIR", "warehouse.local_state_dir",
    "Local folder of the pipeline's SQLite state, locks and upload spool; empty: <data_dir>/state for a local "
    "data_dir, .rag_sft_state/ in the working directory for an object store.",
    default="",
)
CACHE_URL = Setting(
    "RAG_SFT_CACHE_URL", "warehouse.cache_url",
    "The LLM answer cache (corrections and judge verdicts): empty for the SQLite file "
    "<data_dir>/cache/completions.sqlite (one machine; in the local state folder when data_dir is an object store), "
    "postgresql+psycopg2://user:pw@host/db for workers on several hosts (empty and a PostgreSQL state_url: that "
    "database), or sqlite:///path.",
    default="", secret=True,
)
STATE_URL = Setting(
    "RAG_SFT_STATE_URL", "warehouse.state_url",
    "The database of the pipeline's shared truth (the request and near-duplicate indexes, the erasure and training "
    "ledgers): empty for SQLite files in the local state folder (one machine), postgresql+psycopg2://user:pw@host/db "
    "for workers on several hosts, 'local' for SQLite files with RAG_SFT_EXECUTOR=celery or k8s (workers sharing one "
    "machine).",
    default="", secret=True,
)

# The rules (the sft_rules resource).
NEAR_DUPLICATES = Setting(
    "RAG_SFT_NEAR_DUPLICATES", "sft_rules.near_duplicates",
    "One sample per question (rule 13): samples whose question (normalized; whatever documents answered it) is "
    "near-identical to a kept one of the day or of an earlier day are filtered as near_duplicate, naming the kept "
    "sample_id. true/false, 1/0, yes/no, on/off.",
    default=True, parse=parse_bool,
)

# Triage (docs/retriever.md): which part of the RAG service failed.
TRIAGE = Setting(
    "RAG_SFT_TRIAGE", "triage.enabled",
    "Route each event to generation (SFT), retrieval (embedding pairs), both, or review. Off: every event is a "
    "generation fault, as before triage. true/false, 1/0, yes/no, on/off.",
    default=True, parse=parse_bool,
)
TRIAGE_SIMILARITY = Setting(
    "RAG_SFT_TRIAGE_SIMILARITY", "triage.similarity",
    "The project's own question-passage similarity, used where the evaluator sent no context check and to pick "
    "positives and hard negatives: 'off' (the evaluator's checks, the retrieval scores and the labels decide) or "
    "'wordllama' (offline, its weights in the wheel; about 135 events/s on 2 cores, and blind to Chinese: its "
    "tokenizer spells Chinese characters as bytes, so use it for English traffic).",
    default="off",
)

# Corrected answers (the completions resource): the openai client's own variables, so a user's usual
# environment just works.
COMPLETION_STRATEGY = Setting(
    "RAG_SFT_COMPLETION_STRATEGY", "completions.strategy",
    "'naive': label prefix + original answer, no network. 'llm': a corrected answer from an OpenAI-compatible "
    "endpoint.",
    default="naive",
)
OPENAI_BASE_URL = Setting(
    "OPENAI_BASE_URL", "completions.base_url", "OpenAI-compatible endpoint (OpenAI, vLLM, Ollama, a gateway).",
    default=DEFAULT_LLM_BASE_URL,
)
LLM_MODEL = Setting(
    "RAG_SFT_LLM_MODEL", "completions.model", "Model that writes the corrected answers.", default=DEFAULT_LLM_MODEL
)
OPENAI_API_KEY = Setting(
    "OPENAI_API_KEY", "completions.api_key",
    "The LLM API key, read when the client is made: completions.api_key names the variable that holds it "
    "({env: OPENAI_API_KEY} by default), never the key itself (it would be stored with the run).",
    shown_default="none (needed by strategy llm; any value for a server without authentication)", secret=True,
)

# Exports for trainers (the trainer_exports resource).
EXPORT_FORMATS = Setting(
    "RAG_SFT_EXPORT_FORMATS", "trainer_exports.formats",
    "Any of trl_prompt_completion, trl_messages, openai_chat, alpaca (with LLaMA-Factory's dataset_info.json): all, "
    "or a comma list.",
    default=[], parse=export_formats,
)

# Training (the lora_training resource).
BASE_MODEL = Setting(
    "RAG_SFT_BASE_MODEL", "lora_training.base_model",
    "Local folder or hub id of the causal LM to adapt (from_pretrained).",
    shown_default="the tiny model `<data_dir>/models/base/tiny-llama` that `rag-sft tiny-base` builds (make run does it)",
)
MIN_NEW_SAMPLES = Setting(
    "RAG_SFT_MIN_NEW_SAMPLES", "lora_training.min_new_samples", "N: new exported samples that start a training run.",
    default=1000, parse=int,
)
TRAIN_LAST_DAYS = Setting(
    "RAG_SFT_TRAIN_LAST_DAYS", "lora_training.last_days", "Train on the latest K exportable days; 0 = all of them.",
    default=0, parse=int,
)
TRAIN_LEARNING_RATE = Setting(
    "RAG_SFT_TRAIN_LEARNING_RATE", "lora_training.learning_rate", "AdamW learning rate.", default=2e-4, parse=float
)
TRAIN_EPOCHS = Setting("RAG_SFT_TRAIN_EPOCHS", "lora_training.epochs", "Passes over the training split.", default=1, parse=int)
TRAIN_MAX_LENGTH = Setting(
    "RAG_SFT_TRAIN_MAX_LENGTH", "lora_training.max_length",
    "Tokens per sample. A longer prompt keeps its instruction and question; its documents share the room left, the "
    "lowest-ranked dropped first (counted as truncated_samples).",
    default=2048, parse=int,
)
TRAIN_QUANTIZATION = Setting(
    "RAG_SFT_TRAIN_QUANTIZATION", "lora_training.quantization",
    "'4bit': QLoRA, the base loaded in 4-bit NF4 (needs a CUDA GPU and bitsandbytes; refused with a clear error "
    "elsewhere, never ignored).",
    default="none",
)
TRAIN_ON_NAIVE_COMPLETIONS = Setting(
    "RAG_SFT_TRAIN_ON_NAIVE_COMPLETIONS", "lora_training.train_on_naive_completions",
    "Also train on naive completions (a label prefix + the original, wrong answer): the model then learns to repeat "
    "the answers users complained about. Off: a training dataset holds llm and human corrections only, and the "
    "sensor does not train when there are none. 1 turns it on.",
    default=False, parse=is_one,
)

# The model gate's judge (the evaluator resource).
JUDGE_BASE_URL = Setting(
    "RAG_SFT_JUDGE_BASE_URL", "evaluator.base_url", "The judge's OpenAI-compatible endpoint; empty: no judge.",
    default="",
)
JUDGE_MODEL = Setting("RAG_SFT_JUDGE_MODEL", "evaluator.model", "The judge model.", default=DEFAULT_LLM_MODEL)
JUDGE_API_KEY = Setting(
    "RAG_SFT_JUDGE_API_KEY", "evaluator.api_key",
    "The judge's API key, read when the client is made: evaluator.api_key names the variable that holds it "
    "({env: RAG_SFT_JUDGE_API_KEY} by default), never the key itself.",
    shown_default="`OPENAI_API_KEY`", secret=True,
)
JUDGE_STAND_IN = Setting(
    "RAG_SFT_JUDGE_STAND_IN", "evaluator.stand_in",
    "The endpoint is the local stub's stand-in judge (the demo): labelled so in every output. 1 turns it on.",
    default=False, parse=is_one,
)
EVAL_QUESTIONS = Setting(
    "RAG_SFT_EVAL_QUESTIONS", "evaluator.eval_questions",
    "Held-out questions answered by each model: the first of eval.jsonl, ordered so that any prefix draws from every "
    "day and label in proportion.",
    default=64, parse=int,
)
SERVED_PROMPT_TEMPLATE = Setting(
    "RAG_SFT_SERVED_PROMPT_TEMPLATE", "evaluator.served_prompt_template",
    "The RAG service's own prompt, with {documents} (the numbered documents) and {question}: what each model answers "
    "in the A/B comparison and the replay set, so candidates are judged as served, never given the correction "
    "instruction of the failure's label. Empty: the documents, the plain instruction ('请根据文档内容回答问题。' / "
    "'Answer the question based on the documents.') and the question.",
    default="",
)
JUDGE_AUDIT = Setting(
    "RAG_SFT_JUDGE_AUDIT", "evaluator.audit_path",
    "JSONL of answers with human labels (the judge's audit set); empty: none.", default="",
)

# Read when the definitions load.
START_DATE = Setting(
    "RAG_SFT_START_DATE", "daily_partitions.start_date",
    "The first day of the daily partitions (YYYY-MM-DD); events before it are rejected as timestamp_out_of_range. "
    "`make run` and `make ui` set it to the first day of the events when unset (`rag-sft start-date`).",
    DEFINITIONS, default="2025-01-01",
)
EXECUTOR = Setting(
    "RAG_SFT_EXECUTOR", "daily_sft_job.executor",
    "Where the daily job's steps run: in_process, celery (deploy/celery/README.md) or k8s (a pod per step). celery "
    "and k8s put steps on several machines: the warehouse then refuses to run without RAG_SFT_STATE_URL.",
    DEFINITIONS, default="in_process",
)
CELERY_BROKER = Setting(
    "RAG_SFT_CELERY_BROKER", "celery_executor.broker",
    "The Celery broker with RAG_SFT_EXECUTOR=celery, e.g. redis://host:6379/0; it also carries the steps' results "
    "back. Read by dagster-celery as {env: RAG_SFT_CELERY_BROKER}.",
    DEFINITIONS, shown_default="none (needed by celery)", secret=True,
)
TRAINING_QUEUE = Setting(
    "RAG_SFT_TRAINING_QUEUE", "lora_training_job.queue",
    "With celery, the queue of the training job's steps: the one the GPU machine's worker takes "
    "(`dagster-celery worker start -q gpu`); empty: Celery's default queue, as the daily job.",
    DEFINITIONS, default="",
)
DAILY_LAG_MINUTES = Setting(
    "RAG_SFT_DAILY_LAG_MINUTES", "daily_sft_schedule.lag",
    "Minutes after UTC midnight the schedule materializes the day that closed, a lag for stragglers.",
    DEFINITIONS, default=DEFAULT_LAG, parse=minutes, shown_default=f"`{DEFAULT_LAG.total_seconds() / 60:g}`",
)
AUTOMATION = Setting(
    "RAG_SFT_AUTOMATION", "automation",
    "off: the schedule and the change sensor load stopped (start them in the UI).",
    DEFINITIONS, default=True, parse=is_not_off, shown_default="on",
)
SENSOR_INTERVAL_S = Setting(
    "RAG_SFT_SENSOR_INTERVAL_S", "lora_training_sensor.minimum_interval_seconds",
    "Seconds between the daemon's evaluations of the training sensor.", DEFINITIONS, default=30, parse=int,
)
SOURCE_SENSOR_INTERVAL_S = Setting(
    "RAG_SFT_SOURCE_SENSOR_INTERVAL_S", "source_change_sensor.minimum_interval_seconds",
    "Seconds between the daemon's evaluations of the change sensor.", DEFINITIONS, default=60, parse=int,
)

# The Dagster instance on PostgreSQL (deploy/dagster-postgres.yaml).
PG_HOST = Setting("RAG_SFT_PG_HOST", "postgres_db.hostname", "The PostgreSQL server of the instance.", INSTANCE,
                  shown_default="none (needed)")
PG_PORT = Setting("RAG_SFT_PG_PORT", "postgres_db.port", "Its port.", INSTANCE, shown_default="none (needed)")
PG_USER = Setting("RAG_SFT_PG_USER", "postgres_db.username", "The role.", INSTANCE, shown_default="none (needed)")
PG_PASSWORD = Setting("RAG_SFT_PG_PASSWORD", "postgres_db.password",
                      "The role's password (never written to a file).", INSTANCE, shown_default="none (needed)",
                      secret=True)
PG_DB = Setting("RAG_SFT_PG_DB", "postgres_db.db_name", "An existing, empty database; Dagster creates its tables.",
                INSTANCE, shown_default="none (needed)")

# The commands.
DVC = Setting(
    "RAG_SFT_DVC", "rag-sft erase --dvc", "The dvc program that re-hashes and pushes the datasets after an erasure.",
    COMMANDS, shown_default="`.venv-dvc/bin/dvc` (`make dvc`) when it exists, else `dvc` on the PATH",
)
STAND_IN_CORRECTOR_KEY = Setting(
    "RAG_SFT_STAND_IN_CORRECTOR_KEY", "rag-sft run (sample events)",
    "Set by `rag-sft run` in its own process, never by hand: the key sent to the stand-in corrector that corrects "
    "the sample week (it checks none), so the user's own key never goes to the stub.",
    COMMANDS, shown_default="set by the command", secret=True,
)


def declared() -> list[Setting]:
    """Every setting of this module, in the order declared."""
    return [value for value in globals().values() if isinstance(value, Setting)]


def markdown() -> str:
    """The tables of docs/configuration.md, "Environment variables": one per group."""

    def cell(text: str) -> str:
        """Plain text as a table cell's Markdown: `code` kept, `*`, `<` and `|` elsewhere shown as they are."""
        parts = text.replace("\n", " ").split("`")
        for index in range(0, len(parts), 2):  # outside the code spans
            parts[index] = parts[index].replace("*", "\\*").replace("<", "&lt;").replace("|", "\\|")
        return "`".join(parts)

    parts = []
    for group, (title, intro) in GROUPS.items():
        rows = [
            f"| `{s.variable}` | `{s.name}` | {cell(s.default_text())} | "
            f"{'Secret: handed on as its name, never shown. ' if s.secret else ''}{cell(s.description)} |"
            for s in declared()
            if s.group == group
        ]
        parts.append(
            f"### {title}\n\n{intro}\n\n| variable | setting | default | meaning |\n| --- | --- | --- | --- |\n"
            + "\n".join(rows)
            + "\n"
        )
    return "\n".join(parts)


BEGIN = "<!-- generated by `python -m rag_sft.settings --markdown`: do not edit by hand -->"
END = "<!-- end of the generated settings -->"


def with_table(page: str) -> str:
    """`page` with the generated tables between its BEGIN and END markers."""
    head, begin, rest = page.partition(BEGIN)
    _, end, tail = rest.partition(END)
    if not begin or not end:
        raise ValueError(f"the page has no {BEGIN} ... {END} markers")
    return f"{head}{BEGIN}\n\n{markdown()}\n{END}{tail}"


def main(argv: list[str]) -> int:
    """`--markdown`: print the tables; `--write PAGE`: put them between the page's markers."""
    if argv == ["--markdown"]:
        print(markdown(), end="")
        return 0
    if len(argv) == 2 and argv[0] == "--write":
        page = Path(argv[1])
        page.write_text(with_table(page.read_text(encoding="utf-8")), encoding="utf-8")
        return 0
    print("usage: python -m rag_sft.settings --markdown | --write docs/configuration.md", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
