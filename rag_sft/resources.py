"""Configurable resources: where events come from, where outputs go, and the SFT rules.

A field with an environment variable takes the setting declared in `rag_sft/settings.py` as its
default (`settings.X.field()`: its value read whenever the resource is built, its description
the one the docs show), so a launchpad change of one field keeps the environment's other
settings (docs/configuration.md, "Environment variables"). Secrets become a `dg.EnvVar`, read
only where they are used and never shown by value.

`default_resources()` at the end is the resource set of every deployment: local and production
differ only by the environment's values (docs/configuration.md, "Local and production").
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal, TypeVar

import dagster as dg
from pydantic import ConfigDict, Field, field_validator

from rag_sft import settings
from rag_sft.assets.partitions import event_days
from rag_sft.core import parallel
from rag_sft.core.balance import BalanceSettings
from rag_sft.core.checks import CheckSettings
from rag_sft.core.completion import CompletionStrategy, NaiveCompletion
from rag_sft.core.events import DEFAULT_MAX_FIELD_CHARS
from rag_sft.core.exports import DEFAULT_SYSTEM_MESSAGE, known_formats
from rag_sft.core.llm import DEFAULT_SYSTEM_PROMPT, LlmSettings, RetryPolicy
from rag_sft.core.names import day_name
from rag_sft.core.rules import RuleSettings
from rag_sft.core.similarity import similarity_for
from rag_sft.core.triage import TriageSettings
from rag_sft.io.llm.completion_cache import AnswerCache, open_completion_cache, sqlite_cache_path
from rag_sft.io.sources.landing import LandingFolder
from rag_sft.io.sources.lines import DEFAULT_LANDING_PATTERN
from rag_sft.io.sources.sql import SqlTable
from rag_sft.io.sql_urls import is_postgres_url, redacted_sql_url
from rag_sft.io.state.state_db import LOCAL_STATE, StateStore, StateUnavailable, open_state_db
from rag_sft.io.storage.location import Location, forget_local_copy, is_uri, local_copy, location, remove_tree, spool_dir
from rag_sft.io.storage.warehouse import staged_name, staging_dir
from rag_sft.training.settings import DEFAULT_TARGET_MODULES, LoraSettings

# The local state of a warehouse on an object store, when RAG_SFT_STATE_DIR is not set.
REMOTE_DATA_STATE_DIR = ".rag_sft_state"
# The name assets/training.py cites the opt-in by.
TRAIN_ON_NAIVE_ENV = settings.TRAIN_ON_NAIVE_COMPLETIONS.variable


def default_data_dir() -> str:
    """$RAG_SFT_DATA_DIR (a folder, or an object store URI such as s3://bucket/prefix), else data."""
    value = settings.DATA_DIR.value()
    return value if is_uri(value) else str(Path(value).absolute())


def local_data_dir() -> Path:
    """The local folder of what the defaults keep on disk (the landing folder, the SQLite events
    database, the demo base model): data_dir, or ./data when data_dir is an object store."""
    data_dir = default_data_dir()
    return Path("data").absolute() if is_uri(data_dir) else Path(data_dir)


def default_landing_dir() -> str:
    return str(location(settings.LANDING_DIR.raw() or local_data_dir() / "landing").absolute())


def default_sql_url() -> str:
    # The URL may hold a password: from the environment it stays an EnvVar, never shown.
    return settings.SQL_URL.value() or f"sqlite:///{local_data_dir() / 'events.db'}"


def default_base_model() -> str:
    return settings.BASE_MODEL.raw() or str(local_data_dir() / "models" / "base" / "tiny-llama")


def resolved(value: str | None) -> str | None:
    """A setting's value where it is used: an EnvVar (a secret's default, or a resource used outside
    a run, where Dagster has not resolved it) is read from the environment now, as Dagster does."""
    return value.get_value() if isinstance(value, dg.EnvVar) else value


class EventSource(dg.ConfigurableResource):
    """Where raw quality events are read from."""

    kind: Literal["landing", "sql"] = settings.SOURCE.field(validate_default=True)
    landing_dir: str = settings.LANDING_DIR.field(default_landing_dir)
    landing_pattern: str = settings.LANDING_PATTERN.field(lambda: DEFAULT_LANDING_PATTERN)
    sql_url: str = settings.SQL_URL.field(default_sql_url)
    sql_table: str = Field(default="raw_quality_events", description="Table with docs/evaluation as JSON.")

    def open(self, state_dir: Path | None = None) -> LandingFolder | SqlTable:
        """The source; a landing folder keeps its index (which files hold which days) under
        `state_dir` (in memory when None)."""
        valid = event_days()
        if self.kind == "sql":
            url = resolved(self.sql_url)
            counts_path = state_dir / f"sql-days-{_key(url, self.sql_table, valid[0].isoformat())}.json" if state_dir else None
            return SqlTable(url, self.sql_table, counts_path, valid)
        # The placement of out-of-range events depends on the first day: one index per start date.
        key = _key(str(location(self.landing_dir).absolute()), valid[0].isoformat())
        index = state_dir / f"landing-index-{key}.sqlite" if state_dir else None
        return LandingFolder(self.landing_dir, index, valid, self.landing_pattern)


@contextmanager
def day_lock(path: Path, log, day: str) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if log is not None:
                log.info(f"another run of {day} is writing it: waiting for it to finish")
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextmanager
def owner_only_files(enabled: bool) -> Iterator[None]:
    """Files and folders created meanwhile get 0600 and 0700 (umask 077). A umask belongs to the
    whole process: the daily job runs its steps in one process, so it covers every writer of the
    run, and the ingest workers forked meanwhile inherit it."""
    if not enabled:
        yield
        return
    previous = os.umask(0o077)
    try:
        yield
    finally:
        os.umask(previous)


Store = TypeVar("Store", bound=StateStore)


def _key(*parts: str) -> str:
    """A file-name-safe key of the source (a hash, so no URL or password shows in a name)."""
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]


class Warehouse(dg.ConfigurableResource):
    """The data folder: Parquet tables under warehouse/, daily JSONL under datasets/sft/. It may
    be a prefix in an object store; the pipeline's own bookkeeping (SQLite files, locks) stays
    on the local disk, under `local_state_dir` (docs/s3.md, "What stays local: warehouse.local_state_dir")."""

    data_dir: str = settings.DATA_DIR.field(default_data_dir)
    local_state_dir: str = settings.STATE_DIR.field()
    parquet_compression: str = Field(default="lz4", description="Parquet codec (lz4, zstd, snappy, none).")
    batch_size: int = Field(default=4096, description="Events per Arrow record batch (bounds memory).")
    workers: int = Field(
        default=0,
        ge=0,
        description="Batches processed at once (processes for ingest, threads after); 0 = one per CPU core.",
    )
    private_files: bool = Field(
        default=True,
        description="Files and folders a run writes (they hold users' questions and answers) are readable by their "
        "owner only: 0600 and 0700. False: the process's umask decides.",
    )
    cache_url: str = settings.CACHE_URL.field()
    state_url: str = settings.STATE_URL.field()

    @contextmanager
    def completion_cache(self) -> Iterator[AnswerCache]:
        """The LLM answer cache, open for the duration of the block."""
        cache = open_completion_cache(self._cache_url(), self.cache_dir())
        try:
            yield cache
        finally:
            cache.close()

    def has_completion_cache(self) -> bool:
        """Whether there is a cache to look in: a database one always; a SQLite file once written."""
        url = self._cache_url()
        return is_postgres_url(url) or sqlite_cache_path(url, self.cache_dir()).exists()

    def _cache_url(self) -> str:
        state_url = resolved(self.state_url) or ""
        return resolved(self.cache_url) or (state_url if is_postgres_url(state_url) else "")

    def open_state(self, store: type[Store]) -> Store:
        """One of the shared-truth stores (`io/state/state_db.py`), on its own connection: in the state
        database, else its SQLite file in the local state folder. Close it (or use it in a with)."""
        url, local = self._state_url(), self.state_dir() / store.FILE
        if url and local.exists():
            # Starting empty would let erased requests back in and count every sample as new.
            raise StateUnavailable(
                f"{local} holds this machine's {store.__name__}, not in the state database "
                f"{redacted_sql_url(url)} yet: run `rag-sft state-import` on this machine first "
                "(it copies every local store into the database), or remove the file"
            )
        return store(open_state_db(url, local))

    def state_place(self) -> str:
        """Where the shared-truth stores are, for messages (a database URL without its password)."""
        url = self._state_url()
        return f"the state database {redacted_sql_url(url)}" if url else f"the state folder {self.state_dir()}"

    def identity(self) -> str:
        """This warehouse among others one Dagster instance may have seen: its root, absolute."""
        return str(self.root().absolute())

    def _state_url(self) -> str:
        url = resolved(self.state_url) or ""
        executor = settings.EXECUTOR.value()
        if not url and executor in ("celery", "k8s"):
            raise StateUnavailable(
                f"RAG_SFT_EXECUTOR={executor} runs steps on several machines, but the shared truth (request and "
                "near-duplicate indexes, erasure and training ledgers) has no state database: set RAG_SFT_STATE_URL="
                "postgresql+psycopg2://… on every machine, or RAG_SFT_STATE_URL=local where all workers share one "
                "machine and its RAG_SFT_STATE_DIR"
            )
        return "" if url == LOCAL_STATE else url

    @contextmanager
    def day_lock(self, day: str, log) -> Iterator[None]:
        """One writer of a day at a time: a run of the day, or an erasure rewriting it. A `flock`
        among this machine's processes, and with a state database a lock in it, across machines."""
        with day_lock(self.state_dir() / "locks" / f"{day_name(day)}.lock", log, day):
            url = self._state_url()
            if not url:
                yield
                return
            db = open_state_db(url, Path())
            try:
                with db.hold(f"rag_sft day {day_name(day)}") as waited:
                    if waited and log is not None:
                        log.info(f"a run of {day} on another machine was writing it: waited for it to finish")
                    yield
            finally:
                db.close()

    def worker_count(self) -> int:
        return parallel.resolve_workers(self.workers)

    @contextmanager
    def yield_for_execution(self, context: dg.InitResourceContext) -> Iterator[Warehouse]:
        """One run of a day at a time: a run of a partition holds the day's lock from its first
        step to its last (the daily job runs its steps in one process), so a scheduled run and a
        manual backfill of the same day follow each other instead of racing in the swaps.
        With `private_files`, everything the run creates is its owner's alone."""
        day = context.run.tags.get("dagster/partition") if context.run else None
        with owner_only_files(self.private_files):
            if day is None:
                yield self
                return
            with self.day_lock(day, context.log):
                yield self

    @contextmanager
    def scratch_dir(self) -> Iterator[Path]:
        """A private local temporary folder where the warehouse's files are staged (the tables'
        disk, out of every table's glob, or the spool of an object store), removed afterwards, or
        by the next run if this process is killed."""
        scratch = staging_dir(spool_dir(self.root() / "warehouse")) / staged_name()
        scratch.mkdir()
        try:
            yield scratch
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    def remote(self) -> bool:
        return is_uri(self.data_dir)

    def root(self) -> Location:
        """`data_dir` as a Path, or as an object store prefix whose uploads are spooled locally."""
        return self.at(self.data_dir)

    def state_dir(self) -> Path:
        """Bookkeeping the pipeline keeps between runs (indexes, ledgers, locks): always local."""
        if self.local_state_dir:
            return Path(self.local_state_dir).absolute()
        return Path(REMOTE_DATA_STATE_DIR).absolute() if self.remote() else Path(self.data_dir) / "state"

    def cache_dir(self) -> Path:
        """The LLM answer cache's folder: <data_dir>/cache on a local disk, in the state folder otherwise."""
        return self.state_dir() / "cache" if self.remote() else Path(self.data_dir) / "cache"

    def table_dir(self, table: str) -> Location:
        return self.root() / "warehouse" / table

    def export_dir(self, day: str) -> Location:
        return self.root() / "datasets" / "sft" / f"date={day_name(day)}"

    def jsonl_path(self, day: str) -> Location:
        return self.export_dir(day) / "records.jsonl"

    def versions_dir(self) -> Location:
        """Dataset versions (vNNN): immutable snapshots of exportable days."""
        return self.root() / "datasets" / "versions"

    def training_dir(self) -> Location:
        """Training datasets, one folder per data and split settings."""
        return self.root() / "training"

    def models_dir(self) -> Location:
        """Model versions and their registry."""
        return self.root() / "models"

    def corrections_dir(self) -> Location:
        """A person's corrected answers by sample_id (`io/registry/corrections.py`), used by training datasets."""
        return self.root() / "corrections"

    def at(self, path: str) -> Location:
        """A path this warehouse wrote (a materialization's `path`), as a Path or an object store path."""
        return location(path, spool=self.state_dir() / "spool")

    def local_copy(self, folder: Location) -> Path:
        """A finished folder (a training dataset, a model version) as local files, for the code that
        reads files (training, generation): itself on a disk, downloaded once into the state folder
        from a store."""
        return local_copy(folder, self.state_dir() / "downloads")

    def forget_local_copy(self, folder: Location) -> None:
        """Drop the download of a folder rewritten since (an erasure); nothing on a disk."""
        forget_local_copy(folder, self.state_dir() / "downloads")

    def preferences_path(self, day: str) -> Location:
        """Preference pairs (prompt, chosen, rejected) of the day's LLM-corrected records."""
        return self.export_dir(day) / "preferences.jsonl"

    def withdraw_exports(self, day: str) -> list[str]:
        """Remove the day's exported files (a held-back day must leave nothing to pick up)."""
        folder = self.export_dir(day)
        removed = sorted(str(path) for path in folder.iterdir()) if folder.is_dir() else []
        remove_tree(folder)
        return removed


class SftRules(dg.ConfigurableResource):
    """The numbers of the rules (docs/spec.md, "Rules"); every default is the articles' value."""

    top_k: int = Field(default=3, description="Context docs kept, by score (rule 2).")
    doc_max_chars: int = Field(default=500, description="Characters of each doc in the prompt (rule 5).")
    confidence_factor: float = Field(default=1.5, description="confidence = min(1, score x factor) (rule 4).")
    min_confidence: float = Field(default=0.6, description="Samples below this are filtered (rule 4).")
    instruction_language: Literal["auto", "zh", "en"] = Field(
        default="auto", description="Language of instructions and prompt headings; auto = the question's."
    )
    max_field_chars: int = Field(
        default=DEFAULT_MAX_FIELD_CHARS, description="Longer text fields are rejected as oversized_field."
    )
    weight_baseline: float = Field(default=0.7, description="Sample weight baseline confidence (rule 8).")
    weight_below_baseline: float = Field(default=0.5, description="Sample weight under the baseline.")
    weight_slope: float = Field(default=4.0, description="Sample weight slope above the baseline.")
    max_sample_weight: float = Field(default=5.0, description="Sample weight cap.")
    label_rarity_factor: float = Field(default=0.6, description="Label weight = base + factor x total/count.")
    label_base_weights: dict[str, float] = Field(
        default={"factuality_error": 1.5, "low_relevance": 1.3}, description="Base label weights (rule 9)."
    )
    default_label_base_weight: float = Field(default=1.0, description="Base weight of other labels.")
    redact_pii: bool = Field(
        default=True,
        description="Replace personal data (phones, e-mail, ID numbers, bank cards, IBANs, SSNs, IPs, API keys and "
        "passwords) by typed placeholders in annotated_samples and everything after it: prompts, LLM requests and "
        "replies, exports; a request_id or doc id holding any by a stable pseudonym (rule 14).",
    )
    near_duplicates: bool = settings.NEAR_DUPLICATES.field(validate_default=True)
    near_duplicate_similarity: float = Field(
        default=0.8, gt=0, le=1, description="Jaccard similarity (MinHash estimate) from which two samples are one."
    )
    redact_raw: bool = Field(
        default=False,
        description="Redact raw_events and the dead letter's raw_text and detail too (ids pseudonymized), so the raw "
        "text is kept nowhere (a re-materialization can then no longer recover it).",
    )

    def settings(self) -> RuleSettings:
        return RuleSettings(
            top_k=self.top_k,
            doc_max_chars=self.doc_max_chars,
            confidence_factor=self.confidence_factor,
            min_confidence=self.min_confidence,
            instruction_language=self.instruction_language,
            weight_baseline=self.weight_baseline,
            weight_below_baseline=self.weight_below_baseline,
            weight_slope=self.weight_slope,
            max_sample_weight=self.max_sample_weight,
            label_rarity_factor=self.label_rarity_factor,
            label_base_weights=dict(self.label_base_weights),
            default_label_base_weight=self.default_label_base_weight,
            redact_pii=self.redact_pii,
        )


class ExportChecks(dg.ConfigurableResource):
    """Thresholds and severities of the checks that gate a day's export (docs/checks.md, "Asset checks").

    ERROR holds a failing day back (no JSONL, the run fails); WARN lets it through flagged. The
    label mix only warns: balance is the training set's (`LoraTraining.max_label_share`).
    The confidence floor is `sft_rules.min_confidence`, the same number the filter uses.
    """

    max_filtered_share: float = Field(
        default=0.5, description="Warn when more than this share of accepted events is filtered for low confidence."
    )
    max_label_mix_change: float = Field(
        default=0.2,
        gt=0,
        le=1,
        description="label_balance warns when a label's share of the day moved by more than this (0.2 = 20 points) "
        "against the trailing days': the evaluator or the service changed. A monitor: it never holds a day back.",
    )
    label_mix_days: int = Field(default=7, ge=1, description="Trailing days the day's label mix is compared with.")
    min_records_for_label_mix: int = Field(
        default=50, ge=1, description="A day (or trailing window) with fewer exported records is not compared."
    )
    confidence_severity: Literal["ERROR", "WARN"] = Field(
        default="ERROR",
        description="Severity of a confidence failure: ERROR holds the day back (no JSONL; sft_jsonl and the run "
        "fail, on purpose); WARN exports it, flagged.",
    )
    export_format_severity: Literal["ERROR", "WARN"] = Field(
        default="ERROR",
        description="Severity of a malformed JSONL line: ERROR holds the day back (the file is not published; "
        "sft_jsonl and the run fail, on purpose); WARN publishes it, flagged.",
    )

    def settings(self, min_confidence: float) -> CheckSettings:
        return CheckSettings(
            min_confidence=min_confidence,
            max_filtered_share=self.max_filtered_share,
            max_label_mix_change=self.max_label_mix_change,
            label_mix_days=self.label_mix_days,
            min_records_for_label_mix=self.min_records_for_label_mix,
            confidence_severity=self.confidence_severity,
            export_format_severity=self.export_format_severity,
        )


class ApiKeyFromEnv(dg.Config):
    """The LLM API key, given by the name of the environment variable that holds it. Its config
    is a mapping, `{env: NAME}`, never a string: Dagster refuses a key typed into the launchpad or
    run config before it creates the run, so the key is never stored with the run."""

    model_config = ConfigDict(hide_input_in_errors=True)

    env: str = Field(
        default=settings.OPENAI_API_KEY.variable,
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="Name of the environment variable holding the key.",
    )


def key_from_environment(value: Any, resource: str) -> Any:
    """An api_key setting as `{env: NAME}`: a dg.EnvVar becomes its name, a literal key is refused."""
    if isinstance(value, dg.EnvVar):
        return {"env": value.env_var_name}
    if isinstance(value, str):
        raise ValueError(
            f"{resource}.api_key is read from the environment only: set {settings.OPENAI_API_KEY.variable} where the "
            f"code server and runs start (or name another variable: api_key={{'env': 'MY_KEY_VARIABLE'}})"
        )
    return value


class JudgeKeyFromEnv(ApiKeyFromEnv):
    """The judge's key, by default from RAG_SFT_JUDGE_API_KEY (then OPENAI_API_KEY: see Evaluator.open)."""

    env: str = Field(default=settings.JUDGE_API_KEY.variable, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", description="Name of the environment variable holding the key.")


class Completions(dg.ConfigurableResource):
    """How completions are written (docs/spec.md, "Rule 6: Completion"; docs/llm-corrections.md)."""

    model_config = ConfigDict(hide_input_in_errors=True)  # a refused key is not repeated in the error

    strategy: Literal["naive", "llm"] = settings.COMPLETION_STRATEGY.field(validate_default=True)
    base_url: str = settings.OPENAI_BASE_URL.field()
    model: str = settings.LLM_MODEL.field()
    api_key: ApiKeyFromEnv = Field(
        default_factory=ApiKeyFromEnv,
        description="Where the API key is read: {env: OPENAI_API_KEY} (the default) or another variable's name. "
        "Set the key itself in the environment of the code server and runs, never here: a key in run config would "
        "be stored with the run.",
    )
    temperature: float = Field(default=0.2, ge=0, description="Sampling temperature.")
    max_tokens: int = Field(default=512, ge=1, description="Longest corrected answer; a longer one counts as truncated.")
    system_prompt: str = Field(default=DEFAULT_SYSTEM_PROMPT, description="System message of every request.")
    include_feedback: bool = Field(
        default=True, description="Add the original answer and the evaluator's checks and suggestion to the prompt."
    )
    request_timeout_s: float = Field(default=60.0, gt=0, description="Seconds before a request counts as timed out.")
    max_concurrent_requests: int = Field(default=16, ge=1, description="Requests open at once.")
    max_retries: int = Field(default=5, ge=0, description="Retries of a 429, 5xx, timeout or unreadable answer.")
    backoff_base_s: float = Field(default=0.5, ge=0, description="First retry waits up to this long (doubling).")
    backoff_max_s: float = Field(default=30.0, ge=0, description="Longest backoff between retries.")
    max_retry_after_s: float = Field(default=60.0, ge=0, description="Longest Retry-After honoured.")
    max_requests_per_run: int = Field(default=0, ge=0, description="Cap on requests per materialization; 0 = none.")
    max_tokens_per_run: int = Field(default=0, ge=0, description="Cap on tokens per materialization; 0 = none.")

    @field_validator("api_key", mode="before")
    @classmethod
    def _key_from_the_environment_only(cls, value: Any) -> Any:
        return key_from_environment(value, "completions")

    def api_key_variable(self) -> str:
        """The variable holding the key (Dagster keeps a dg.EnvVar given in Python as it is)."""
        return self.api_key.env_var_name if isinstance(self.api_key, dg.EnvVar) else self.api_key.env

    def llm_settings(self) -> LlmSettings:
        return LlmSettings(
            model=self.model,
            temperature=self.temperature,
            max_tokens=self.max_tokens,
            system_prompt=self.system_prompt,
            include_feedback=self.include_feedback,
        )

    @contextmanager
    def open(self, warehouse: Warehouse) -> Iterator[CompletionStrategy]:
        """The configured strategy; the LLM one caches its answers in the warehouse's answer cache."""
        if self.strategy == "naive":
            yield NaiveCompletion()
            return
        variable = self.api_key_variable()
        api_key = os.environ.get(variable)
        if not api_key:
            raise dg.Failure(
                f"completion strategy 'llm' needs the {variable} environment variable "
                "(any non-empty value for a server without authentication)"
            )
        # Imported here: the naive default never loads the openai client.
        import openai

        from rag_sft.io.llm.llm_completion import LlmCompletion, RunBudget

        client = openai.OpenAI(
            base_url=self.base_url, api_key=api_key, timeout=self.request_timeout_s, max_retries=0
        )
        with warehouse.completion_cache() as cache:
            strategy = LlmCompletion(
                client,
                self.llm_settings(),
                cache,
                concurrency=self.max_concurrent_requests,
                retry=RetryPolicy(self.max_retries, self.backoff_base_s, self.backoff_max_s, self.max_retry_after_s),
                budget=RunBudget(self.max_requests_per_run, self.max_tokens_per_run),
            )
            try:
                yield strategy
            finally:
                strategy.close()


class TrainerExports(dg.ConfigurableResource):
    """Extra files in the formats trainers load as they are, beside each day's JSONL and each
    training dataset's splits (docs/outputs.md, "Exports for trainers")."""

    formats: list[str] = settings.EXPORT_FORMATS.field(validate_default=True)
    system_message: str = Field(default=DEFAULT_SYSTEM_MESSAGE, description="System message of openai_chat and alpaca.")

    @field_validator("formats")
    @classmethod
    def _known_formats(cls, formats: list[str]) -> list[str]:
        return known_formats(formats)


class LoraTraining(dg.ConfigurableResource):
    """What the training sensor waits for and how `lora_training_job` trains (docs/training.md)."""

    base_model: str = settings.BASE_MODEL.field(default_base_model)
    min_new_samples: int = settings.MIN_NEW_SAMPLES.field(validate_default=True, ge=1)
    last_days: int = settings.TRAIN_LAST_DAYS.field(validate_default=True, ge=0)
    eval_share: float = Field(
        default=0.1,
        gt=0,
        lt=1,
        description="Share of the window's question groups (retyped variants and near-duplicates are one group) held "
        "out for eval, drawn from each day and label in proportion (largest remainder), chosen by a hash of the "
        "normalized question; one record per group. 0.1 of 1,000 questions: 100 eval questions.",
    )
    replay_share: float = Field(
        default=0.05, ge=0, lt=1,
        description="Share of questions (by a hash of the normalized question, so retyped variants go together) never "
        "trained on: their failures form the replay set each candidate must fix. 0: no replay set.",
    )
    max_replay_failures: int = Field(
        default=256, ge=1,
        description="The replay set grows with each training dataset (the previous set, then the new failures); the most "
        "recent this many are kept.",
    )
    served_prompt_share: float = Field(
        default=1.0, ge=0, le=1,
        description="Share of the train records (by a hash of sample_id) taught on the prompt the service sends "
        "(evaluator.served_prompt_template: no label-specific instruction) instead of the correction prompt: the "
        "label hint is the teacher's, never the served model's (docs/model-gate.md, 'Trained as served'). 1: "
        "every record; 0: every record keeps its label's instruction.",
    )
    max_attempts: int = Field(default=3, ge=1, description="Failed runs on the same data before the sensor gives up.")
    r: int = Field(default=8, description="LoRA rank.")
    alpha: int = Field(default=16, description="LoRA alpha.")
    dropout: float = Field(default=0.05, description="LoRA dropout.")
    target_modules: list[str] = Field(
        default=list(DEFAULT_TARGET_MODULES), description="Module names that get LoRA adapters."
    )
    learning_rate: float = settings.TRAIN_LEARNING_RATE.field(validate_default=True)
    epochs: int = settings.TRAIN_EPOCHS.field(validate_default=True, ge=1)
    max_length: int = settings.TRAIN_MAX_LENGTH.field(validate_default=True, ge=16)
    batch_size: int = Field(default=8, ge=1, description="Samples per micro-batch.")
    gradient_accumulation_steps: int = Field(
        default=1, ge=1, description="Micro-batches per optimizer step: the effective batch is batch_size x this."
    )
    warmup_ratio: float = Field(
        default=0.03, ge=0, lt=1, description="Share of the optimizer steps with a linear learning-rate warm-up; "
        "cosine decay to 0 follows."
    )
    max_grad_norm: float = Field(default=1.0, gt=0, description="Gradients are clipped to this norm before each step.")
    quantization: Literal["none", "4bit"] = settings.TRAIN_QUANTIZATION.field(validate_default=True)
    seed: int = Field(default=0, description="Seed of initialisation and shuffling.")
    max_label_regression: float = Field(
        default=0.05, ge=0,
        description="No judge: the largest rise of a label's eval loss (nats) the eval-loss comparison accepts; its verdict "
        "is recorded for the reviewer, it promotes nothing.",
    )
    max_label_weight: float = Field(
        default=5.0, gt=0, description="Cap of the label weights computed over the training split (rule 9)."
    )
    train_on_naive_completions: bool = settings.TRAIN_ON_NAIVE_COMPLETIONS.field()
    # Balance belongs to the training set (docs/spec.md, "Rule 12: Balance"):
    # the train split is capped to these, then checked.
    max_label_share: float = Field(
        default=0.6, gt=0, le=1, description="Largest share one label may have of the training split (a dominant "
        "label's surplus is set aside as label_cap, chosen by a hash of sample_id)."
    )
    max_imbalance_ratio: float = Field(
        default=10.0, ge=1, description="Most frequent / least frequent label count of the training split, at most."
    )
    min_records_for_balance: int = Field(
        default=50, ge=1, description="A training split with fewer records is neither capped nor judged for balance."
    )
    min_label_count: int = Field(
        default=5, ge=1, description="Labels with fewer training records are reported, not judged for the imbalance ratio."
    )

    def balance_settings(self) -> BalanceSettings:
        return BalanceSettings(
            max_label_share=self.max_label_share,
            max_imbalance_ratio=self.max_imbalance_ratio,
            min_records_for_balance=self.min_records_for_balance,
            min_label_count=self.min_label_count,
        )

    def lora_settings(self) -> LoraSettings:
        return LoraSettings(
            r=self.r,
            alpha=self.alpha,
            dropout=self.dropout,
            target_modules=tuple(self.target_modules),
            learning_rate=self.learning_rate,
            epochs=self.epochs,
            max_length=self.max_length,
            batch_size=self.batch_size,
            seed=self.seed,
            gradient_accumulation_steps=self.gradient_accumulation_steps,
            warmup_ratio=self.warmup_ratio,
            max_grad_norm=self.max_grad_norm,
            quantization=self.quantization,
        )


class Evaluator(dg.ConfigurableResource):
    """How `model_evaluation` compares the candidate with the model in use (docs/training.md, "The evaluation";
    docs/model-gate.md): answers generated for the held-out questions, judged by an LLM at an OpenAI-compatible endpoint
    with the RAG evaluator's labels. No `base_url`: no judge, the eval-loss gate."""

    model_config = ConfigDict(hide_input_in_errors=True)  # a refused key is not repeated in the error

    base_url: str = settings.JUDGE_BASE_URL.field()
    model: str = settings.JUDGE_MODEL.field()
    api_key: JudgeKeyFromEnv = Field(
        default_factory=JudgeKeyFromEnv,
        description="Where the judge's API key is read: {env: RAG_SFT_JUDGE_API_KEY} (the default; OPENAI_API_KEY "
        "when that is unset) or another variable's name; never the key itself (it would be stored with the run).",
    )
    stand_in: bool = settings.JUDGE_STAND_IN.field()
    max_tokens: int = Field(default=256, ge=1, description="Longest verdict.")
    request_timeout_s: float = Field(default=60.0, gt=0, description="Seconds before a request counts as timed out.")
    max_concurrent_requests: int = Field(default=8, ge=1, description="Judge requests open at once.")
    max_retries: int = Field(default=3, ge=0, description="Retries of a 429, 5xx, timeout or verdict that is not the JSON asked.")
    backoff_base_s: float = Field(default=0.5, ge=0, description="First retry waits up to this long (doubling).")
    prompt_price_per_mtok: float = Field(default=0.0, ge=0, description="Judge cost: US$ per million prompt tokens.")
    completion_price_per_mtok: float = Field(default=0.0, ge=0, description="Judge cost: US$ per million completion tokens.")
    eval_questions: int = settings.EVAL_QUESTIONS.field(ge=1)
    served_prompt_template: str = settings.SERVED_PROMPT_TEMPLATE.field()
    max_new_tokens: int = Field(default=128, ge=1, description="Longest generated answer.")
    generation_batch_size: int = Field(default=8, ge=1, description="Prompts generated at once.")
    temperature: float = Field(default=0.0, ge=0, description="Generation temperature; 0 = greedy.")
    # A closed choice: a misspelt metric is refused when the resource is built, before any answer is generated.
    primary_metric: Literal["factuality_error", "incomplete_answer", "low_relevance", "overconfidence"] = Field(
        default="factuality_error",
        description="The label whose rate the candidate must lower: decided by an exact McNemar test on the questions "
        "one model got right and the other wrong.",
    )
    alpha: float = Field(default=0.05, gt=0, lt=1, description="Significance level of the exact test (two-sided).")
    min_judged_pairs: int = Field(
        default=30, ge=1, description="The gate refuses when fewer questions were judged for both models."
    )
    min_judged_coverage: float = Field(
        default=0.9, ge=0, le=1,
        description="The gate refuses when a smaller share of the eval questions was judged for both models (judge failures).",
    )
    non_inferiority_margin: float = Field(
        default=0.05, ge=0,
        description="Every other label's rate may rise, at worst (the upper bound of the 95% paired bootstrap interval "
        "of its change), by less than this.",
    )
    bootstrap_resamples: int = Field(default=2000, ge=100, description="Resamples of the paired bootstrap.")
    audit_path: str = settings.JUDGE_AUDIT.field()
    min_kappa: float = Field(default=0.6, description="Automatic promotion needs the judge's kappa on every label at least this.")
    min_audit_per_label: int = Field(
        default=10, ge=1,
        description="Audited answers a human gave each label before its kappa counts; fewer (or no audit set): a "
        "version that passes the tests is left a candidate for review, not promoted.",
    )

    @field_validator("api_key", mode="before")
    @classmethod
    def _key_from_the_environment_only(cls, value: Any) -> Any:
        return key_from_environment(value, "evaluator")

    def configured(self) -> bool:
        return bool(self.base_url)

    def judge_label(self) -> str:
        return f"{self.model} (STAND-IN judge: the local stub's heuristic, not a real evaluation)" if self.stand_in else self.model

    @contextmanager
    def open(self, warehouse: Warehouse):
        """The completions client for the judge (its verdicts cached in the warehouse's answer cache)."""
        import openai

        from rag_sft.core.model_comparison import JUDGE_RUBRIC
        from rag_sft.io.llm.llm_completion import LlmCompletion

        variable = self.api_key.env_var_name if isinstance(self.api_key, dg.EnvVar) else self.api_key.env
        # The key of the variable named (any name: the launchpad may name another), read now.
        default_variable = variable == settings.JUDGE_API_KEY.variable
        api_key = os.environ.get(variable) or (os.environ.get(settings.OPENAI_API_KEY.variable) if default_variable else None)
        if not api_key:
            also = f" (or {settings.OPENAI_API_KEY.variable})" if default_variable else ""
            raise dg.Failure(
                f"the judge needs the {variable}{also} environment variable (any value for a server without authentication)"
            )
        client = openai.OpenAI(base_url=self.base_url, api_key=api_key, timeout=self.request_timeout_s, max_retries=0)
        with warehouse.completion_cache() as cache:
            judge = LlmCompletion(
                client,
                LlmSettings(model=self.model, temperature=0.0, max_tokens=self.max_tokens, system_prompt=JUDGE_RUBRIC),
                cache,
                concurrency=self.max_concurrent_requests,
                retry=RetryPolicy(self.max_retries, self.backoff_base_s),
            )
            try:
                yield judge
            finally:
                judge.close()


class Triage(dg.ConfigurableResource):
    """Which part of the RAG service failed, and the embedding pairs of retrieval faults
    (docs/spec.md, "Rule 15: Triage" and "Rule 16: Embedding pairs"). How to set the thresholds
    from a measured baseline: docs/retriever.md, "Thresholds and how to calibrate them"."""

    enabled: bool = settings.TRIAGE.field(validate_default=True)
    similarity: Literal["wordllama", "off"] = settings.TRIAGE_SIMILARITY.field(validate_default=True)
    min_context_relevance: float = Field(
        default=0.5, ge=0, le=1,
        description="The evaluator's context_relevance under this: the passages do not hold the answer (retrieval).",
    )
    min_context_precision: float = Field(
        default=0.5, ge=0, le=1,
        description="The evaluator's context_precision under this: the answer-bearing passage is ranked under noise.",
    )
    min_generation_check: float = Field(
        default=0.5, ge=0, le=1,
        description="An evaluator generation check (faithfulness, groundedness, answer_relevancy) under this: "
        "the answer failed.",
    )
    min_similarity: float = Field(
        default=0.35, ge=-1, le=1,
        description="A passage at least this similar to the question (the project's similarity) holds the answer: a "
        "positive; none in the context: retrieval fault.",
    )
    max_negative_similarity: float = Field(
        default=0.25, ge=-1, le=1,
        description="A passage at most this similar to the question is a hard negative; between this and "
        "min_similarity a passage is neither.",
    )
    min_retrieval_score: float = Field(
        default=0.0,
        description="When neither the evaluator nor the similarity judged the context: a top retrieval score under "
        "this is a retrieval fault. 0: retrieval scores are not used (their scale is the retriever's).",
    )
    min_pair_similarity: float = Field(
        default=0.35, ge=-1, le=1,
        description="The pair_similarity check warns when a query-positive similarity is under this.",
    )
    min_query_length: int = Field(
        default=5, ge=0,
        description="Queries shorter than this (characters in Chinese, words in English) are flagged for review.",
    )
    max_query_length: int = Field(
        default=50, ge=1,
        description="Queries longer than this (characters in Chinese, words in English) are flagged for review.",
    )

    def settings(self) -> TriageSettings:
        return TriageSettings(
            enabled=self.enabled,
            min_context_relevance=self.min_context_relevance,
            min_context_precision=self.min_context_precision,
            min_generation_check=self.min_generation_check,
            min_similarity=self.min_similarity,
            max_negative_similarity=self.max_negative_similarity,
            min_retrieval_score=self.min_retrieval_score,
        )

    def similarity_function(self, max_chars: int = 500):
        """The similarity `similarity` names (None for off), passages cut to `max_chars`."""
        return similarity_for(self.similarity, max_chars)


def default_resources() -> dict:
    """Every resource with its defaults: the environment's settings come from the fields themselves.
    One set for every deployment: local (`make run`, `make ui`) and production (deploy/) differ only
    by the environment's values, so there is no set to choose (docs/configuration.md, "Local and production")."""
    return {
        "event_source": EventSource(),
        "warehouse": Warehouse(),
        "sft_rules": SftRules(),
        "export_checks": ExportChecks(),
        "completions": Completions(),
        "trainer_exports": TrainerExports(),
        "lora_training": LoraTraining(),
        "evaluator": Evaluator(),
        "triage": Triage(),
    }
