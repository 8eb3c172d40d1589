"""lora_training_job: a dataset snapshot, a LoRA adapter trained on it, and its evaluation + gate.

torch, transformers and peft (the `[train]` extra) are imported inside the assets, so loading
the definitions and running the daily pipeline never pays for them.

Each asset's value is a folder the project writes anyway (`<data_dir>/training/<hash>`,
`<data_dir>/models/vNNNN`), named by the `path` of its materialization: nothing is pickled
through an IO manager, and the next asset finds the folder in the event log of its run. With
the data on an object store, each folder is built locally and published whole
(`storage.publish_folder`), and the code that reads files (training, generation) reads a local
copy (`Warehouse.local_copy`).
"""

import contextlib
import hashlib
import math
import shutil
import time
import uuid
from collections import Counter
from pathlib import Path

import dagster as dg
import orjson
import pyarrow as pa
from pydantic import Field

from rag_sft.assets.metadata import ML_OWNERS, TRAINING_CODE_VERSION, count_table
from rag_sft.assets.versions import SFT_DATASET_VERSION, make_version, version_metadata
from rag_sft.checks import export_gate
from rag_sft.core import balance, corrections, replay, rules, training_data
from rag_sft.core.names import dataset_hash_name, dataset_version_name, day_name
from rag_sft.core.exports import ALPACA, export_chunk, file_name, llama_factory_dataset_info
from rag_sft.core.model_comparison import (
    JUDGED_LABELS,
    GateSettings,
    JudgePrice,
    ModelRun,
    compare,
    format_table,
    judge_warnings,
    fixed_rate,
    judged_gate,
    paired_flags_test,
    paired_test,
    prompt_documents,
    summarize,
    table_rows,
)
from rag_sft.core.promotion import Decision, promotion_decision
from rag_sft.core.trigger import ExportLedger, training_window
from rag_sft.io.registry.corrections import read_corrections
from rag_sft.io.registry.dataset_versions import DatasetVersions
from rag_sft.io.registry.model_registry import ModelRegistry
from rag_sft.io.state.export_ledger import update_ledger
from rag_sft.io.storage.location import Location, publish_folder, remove_tree, spool_dir
from rag_sft.io.storage.warehouse import staged_name
from rag_sft.resources import TRAIN_ON_NAIVE_ENV, Evaluator, LoraTraining, SftRules, TrainerExports, Warehouse

DATASET_TAG = "rag_sft/dataset"
REPLAY_FILE = "replay.jsonl"
# How a user opts in to naive completions, as the sensor and the training dataset say it.
NAIVE_OPT_IN = f"lora_training.train_on_naive_completions (${TRAIN_ON_NAIVE_ENV}=1)"


class TrainingDatasetConfig(dg.Config):
    version: str = Field(default="", description="Train on this dataset version (e.g. v002, or 'latest'); empty: use days.")
    days: dict[str, str] = Field(
        default_factory=dict,
        description="day -> sha256 of its JSONL, as the training sensor saw them; empty: the exportable days "
        "chosen by lora_training.last_days.",
    )


TRAINING_DATASET = dg.AssetKey("training_dataset")
LORA_ADAPTER = dg.AssetKey("lora_adapter")
# How train and eval are drawn (core.training_data): part of a training folder's name.
_SPLIT_METHOD = "question-groups, stratified by day and label"


@dg.asset(
    # Training reads a dataset version's files: the edge shows which exports feed it.
    deps=[SFT_DATASET_VERSION],
    check_specs=[
        dg.AssetCheckSpec(
            balance.TRAIN_LABEL_BALANCE,
            asset=TRAINING_DATASET,
            blocking=True,
            description="The train split, after its label caps: no label above max_label_share and the most / least "
            "frequent label at most max_imbalance_ratio (lora_training settings; under min_records_for_balance records "
            "not judged). Fails when no subset can pass (e.g. one label only); the adapter is not trained.",
        ),
        dg.AssetCheckSpec(
            training_data.EVAL_LEAKAGE,
            asset=TRAINING_DATASET,
            blocking=True,
            description="No eval question has the same normalized question or a near-duplicate in the train split "
            "(pairs across the splits = 0); the adapter is not trained otherwise.",
        ),
    ],
    group_name="training",
    kinds={"json"},
    owners=ML_OWNERS,
    code_version=TRAINING_CODE_VERSION,
)
def training_dataset(
    context: dg.AssetExecutionContext,
    config: TrainingDatasetConfig,
    warehouse: Warehouse,
    lora_training: LoraTraining,
    trainer_exports: TrainerExports,
    sft_rules: SftRules,
    evaluator: Evaluator,
) -> dg.MaterializeResult:
    """A snapshot of exportable days split into train and eval by question group (retyped
    variants and near-duplicates together), eval stratified by day and label; the train split's
    dominant labels capped (docs/spec.md, "Rule 12: Balance"), then its label weights (rule 9 over the split, capped).
    Its blocking checks: train_label_balance and eval_leakage."""
    try:  # names from run config become paths: refused when they could leave their folder
        version_name = config.version if config.version in ("", "latest") else dataset_version_name(config.version)
        days = {day_name(day): dataset_hash_name(sha256) for day, sha256 in config.days.items()}
    except ValueError as error:
        raise dg.Failure(str(error), allow_retries=False) from None
    if version_name:
        versions = DatasetVersions(warehouse.versions_dir())
        name = versions.latest() if version_name == "latest" else version_name
        try:
            wanted = {entry["day"]: entry["sha256"] for entry in versions.manifest(name or "latest")["days"]}
        except KeyError as error:
            raise dg.Failure(str(error.args[0]), allow_retries=False) from None
    elif days:
        wanted = days
    else:
        exportable = update_ledger(context.instance, ExportLedger()).exportable()
        wanted = {day: exported.sha256 for day, exported in training_window(exportable, lora_training.last_days).items()}
    if not wanted:
        raise dg.Failure("no exportable day to train on: materialize days whose checks pass first", allow_retries=False)
    # The days are frozen as a dataset version first: training reads the version's files, and
    # the model registry names the version.
    version, created, manifest = make_version(context.instance, warehouse, wanted)
    # The version this run froze is in sft_dataset_version's history, as one made on its own.
    context.log_event(dg.AssetMaterialization(SFT_DATASET_VERSION, metadata=version_metadata(version, created, manifest, warehouse)))
    version_dir = warehouse.versions_dir() / version
    content_hash = manifest["hash"]
    try:  # before the staging folder: a bad corrections file leaves nothing behind
        human_corrections = read_corrections(warehouse.corrections_dir())
    except ValueError as error:
        raise dg.Failure(str(error), allow_retries=False) from None
    # Built in a folder of this run's own, then named by what shapes it (the data and the split
    # settings): a different eval_share makes another folder, never overwrites one a model names.
    training_root = warehouse.training_dir()
    tmp = spool_dir(training_root) / f".{staged_name()}.tmp"
    tmp.mkdir(parents=True)
    # The whole window is read first: groups, strata, the replay set and label caps are decided over all of it.
    rows = [
        corrections.corrected(orjson.loads(line), human_corrections)
        for entry in manifest["days"]
        for line in (version_dir / entry["file"]).read_bytes().splitlines()
    ]
    similarity = sft_rules.near_duplicate_similarity
    # A share of the question groups never trained on, whatever their completion: their failures
    # are the replay set each candidate must fix (a near-duplicate goes with its group).
    keys = training_data.question_keys([row["question"] for row in rows])
    groups = training_data.question_groups(keys, similarity)
    replayed, trainable = [], []
    strategies, left_out = Counter(), Counter()  # the completions taken, and those that cannot be right
    for row, key in zip(rows, keys):
        if replay.is_replay(groups[key], lora_training.replay_share):
            replayed.append(row)  # a failure, whatever its completion
            continue
        strategy = row.get("completion_strategy")
        if corrections.can_train(strategy, lora_training.train_on_naive_completions):
            strategies[strategy] += 1
            trainable.append(row)
        else:
            left_out[strategy] += 1
    if not strategies:
        shutil.rmtree(tmp, ignore_errors=True)
        raise dg.Failure(corrections.nothing_to_train_on(left_out, NAIVE_OPT_IN), allow_retries=False)
    window = [training_data.WindowRecord(r["sample_id"], r["question"], r["label"], r["date"]) for r in trainable]
    split = training_data.split_window(window, lora_training.eval_share, similarity, lora_training.balance_settings())
    chosen = {"train": split.train, "eval": split.eval}
    counts = {name: Counter(window[index].label for index in indexes) for name, indexes in chosen.items()}
    # A share of the train records is taught on the prompt the service sends (no label hint).
    served_prompts = 0
    for index in split.train:
        row = trainable[index]
        if training_data.trains_on_served_prompt(row["sample_id"], lora_training.served_prompt_share):
            trainable[index] = {**row, "prompt": rules.served_prompt(row["prompt"], evaluator.served_prompt_template)}
            served_prompts += 1
    texts = {
        name: {key: [trainable[index][key] for index in indexes] for key in ("prompt", "completion")}
        for name, indexes in chosen.items()
    }
    for name, indexes in chosen.items():
        (tmp / f"{name}.jsonl").write_bytes(b"".join(orjson.dumps(trainable[index]) + b"\n" for index in indexes))
    write_trainer_exports(tmp, texts, trainer_exports, f"rag_sft_{content_hash[:16]}")
    replay_set = replay.grown(_previous_replay_set(context, warehouse), replayed, lora_training.max_replay_failures)
    replay_bytes = b"".join(orjson.dumps(record) + b"\n" for record in replay_set)
    (tmp / REPLAY_FILE).write_bytes(replay_bytes)
    weights = training_data.training_label_weights(counts["train"], sft_rules.settings(), lora_training.max_label_weight)
    weights = {label: round(weight, 6) for label, weight in weights.items()}
    eval_composition = training_data.composition([window[index] for index in split.eval])
    label_capped = Counter(window[index].label for index in split.label_capped)
    verdicts = [
        balance.balance_verdict(counts["train"], weights, lora_training.balance_settings()),
        training_data.leakage_verdict(
            [window[index].question for index in split.train], [window[index].question for index in split.eval], similarity
        ),
    ]
    (tmp / "manifest.json").write_bytes(
        orjson.dumps(
            {
                "dataset_version": version,
                "dataset_hash": content_hash,
                "days": wanted,
                "eval_share": lora_training.eval_share,
                "label_weights": weights,
                "label_cap": dict(sorted(label_capped.items())),
                "eval_composition": eval_composition,
                "completion_strategies": dict(sorted(strategies.items())),
                "left_out": dict(sorted(left_out.items())),
                "replay_share": lora_training.replay_share,
                "replay_failures": {"new": len(replayed), "total": len(replay_set)},
                "served_prompt_records": served_prompts,
            },
            option=orjson.OPT_INDENT_2,
        )
    )
    shape = {"dataset_hash": content_hash, "eval_share": lora_training.eval_share, "label_weights": weights,
             "formats": sorted(trainer_exports.formats), "split": _SPLIT_METHOD, "similarity": similarity,
             "balance": lora_training.balance_settings().__dict__, "train_on_naive": lora_training.train_on_naive_completions,
             "corrections": hashlib.sha256(orjson.dumps(human_corrections, option=orjson.OPT_SORT_KEYS)).hexdigest(),
             "replay_share": lora_training.replay_share, "replay": hashlib.sha256(replay_bytes).hexdigest(),
             "served_prompt": [lora_training.served_prompt_share, evaluator.served_prompt_template]}  # fmt: skip
    folder = training_root / hashlib.sha256(orjson.dumps(shape, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]
    # The same folder may exist already (built by an earlier or a concurrent run): it is kept.
    publish_folder(tmp, folder, last="manifest.json")
    return dg.MaterializeResult(
        metadata={
            "dataset_version": version,
            "dataset_version_created": created,
            "dataset_hash": content_hash,
            "days": dg.MetadataValue.json(sorted(wanted)),
            "day_count": len(wanted),
            "train_records": sum(counts["train"].values()),
            "eval_records": sum(counts["eval"].values()),
            "question_groups": split.question_groups,
            # Retyped variants of the eval questions: neither trained on nor judged.
            "held_out_variants": len(split.held_out_variants),
            "train_labels": count_table(counts["train"], "label"),
            "eval_labels": count_table(counts["eval"], "label"),
            "eval_composition": _composition_table(eval_composition),
            # Train records set aside over their label's cap (docs/spec.md, "Rule 12: Balance"), by label.
            "label_cap": sum(label_capped.values()),
            "label_cap_by_label": count_table(label_capped, "label"),
            "balance": split.caps,
            "completion_strategies": count_table(strategies, "completion_strategy"),
            # Exported, kept for inspection, and not trained on: completions that cannot be right.
            "left_out_completions": count_table(left_out, "completion_strategy"),
            "replay_new_failures": len(replayed),
            "replay_failures": len(replay_set),
            # Train records taught on the service's own prompt (lora_training.served_prompt_share).
            "served_prompt_records": served_prompts,
            **{f"label_weight/{label}": weight for label, weight in sorted(weights.items())},
            "path": dg.MetadataValue.path(str(folder)),
            **{f"trainer_export/{name}": dg.MetadataValue.path(str(folder / file_name(name, "train"))) for name in trainer_exports.formats},
        },
        check_results=[export_gate.check_result(verdict) for verdict in verdicts],
    )


def _composition_table(rows: list[dict]) -> dg.MetadataValue:
    """Eval records by day and label, as a table."""
    columns = [dg.TableColumn("day", "string"), dg.TableColumn("label", "string"), dg.TableColumn("count", "int")]
    return dg.MetadataValue.table([dg.TableRecord(row) for row in rows], dg.TableSchema(columns))


def _previous_replay_set(context: dg.AssetExecutionContext, warehouse: Warehouse) -> list[dict]:
    """The replay set of the latest training dataset (none before the first, or before replay sets existed)."""
    latest = context.instance.get_latest_materialization_event(TRAINING_DATASET)
    if latest is None or latest.asset_materialization is None or "path" not in latest.asset_materialization.metadata:
        return []
    path = warehouse.at(str(latest.asset_materialization.metadata["path"].value)) / REPLAY_FILE
    return [orjson.loads(line) for line in path.read_bytes().splitlines()] if path.is_file() else []


def _materialized_folder(context: dg.AssetExecutionContext, key: dg.AssetKey, warehouse: Warehouse) -> Location:
    """The folder `key` materialized for this run: in the run itself, or in the run it
    re-executes (a re-execution from failure does not repeat the steps that succeeded);
    materialized on its own, the latest one."""
    run = context.run
    while run is not None:
        records = context.instance.get_records_for_run(run.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION).records
        for record in reversed(records):
            materialization = record.event_log_entry.asset_materialization
            if materialization is not None and materialization.asset_key == key:
                return warehouse.at(str(materialization.metadata["path"].value))
        run = context.instance.get_run_by_id(run.parent_run_id) if run.parent_run_id else None
    latest = context.instance.get_latest_materialization_event(key)
    if latest is None or latest.asset_materialization is None:
        raise dg.Failure(f"{key.to_user_string()} was never materialized: run lora_training_job", allow_retries=False)
    return warehouse.at(str(latest.asset_materialization.metadata["path"].value))


def _dataset(folder: Path) -> dict:
    """A training dataset's manifest (version, hash, days, label weights)."""
    return orjson.loads((folder / "manifest.json").read_bytes())


def write_trainer_exports(folder: Path, texts: dict, exports: TrainerExports, name: str) -> None:
    """`<split>.<format>.jsonl` for each chosen format, and LLaMA-Factory's dataset_info.json."""
    for split, columns in texts.items():
        table = pa.table({key: pa.array(values, pa.string()) for key, values in columns.items()})
        for export_format in exports.formats:
            chunk = export_chunk(table, export_format, exports.system_message)
            (folder / file_name(export_format, split)).write_bytes(chunk.data)
    if ALPACA in exports.formats:
        info = llama_factory_dataset_info((f"{name}_{split}", file_name(ALPACA, split)) for split in texts)
        (folder / "dataset_info.json").write_bytes(orjson.dumps(info, option=orjson.OPT_INDENT_2))


@dg.asset(deps=[TRAINING_DATASET], group_name="training", kinds={"pytorch"}, owners=ML_OWNERS, code_version=TRAINING_CODE_VERSION)
def lora_adapter(
    context: dg.AssetExecutionContext, warehouse: Warehouse, lora_training: LoraTraining, evaluator: Evaluator
) -> dg.MaterializeResult:
    """LoRA SFT (peft + transformers) on the training split; a new model version folder."""
    from rag_sft.training import sft

    settings = lora_training.lora_settings()
    dataset_dir = warehouse.local_copy(_materialized_folder(context, TRAINING_DATASET, warehouse))
    training_dataset = _dataset(dataset_dir)
    weights = training_dataset["label_weights"]
    train = _records(dataset_dir / "train.jsonl", weights)
    # The eval loss is measured on the prompt the service sends, as the A/B answers are generated.
    held_out = _records(dataset_dir / "eval.jsonl", weights, evaluator.served_prompt_template)
    if not train or not held_out:
        raise dg.Failure(f"the dataset has {len(train)} train and {len(held_out)} eval records; both must be non-empty")
    registry = ModelRegistry(warehouse.models_dir())
    version, folder = registry.new_version_dir()
    # Written locally, published whole, then registered: the registry entry marks it finished.
    staging = spool_dir(folder.parent) / f".{version}.tmp-{uuid.uuid4().hex}"
    staging.mkdir(parents=True)
    context.log.info(f"training {version} on {len(train)} samples from {lora_training.base_model} ({sft.device_and_dtype()})")
    try:
        result = sft.train_lora(lora_training.base_model, train, held_out, settings, staging, log=context.log.info)
        config = {"base_model": lora_training.base_model, **settings.__dict__, "target_modules": list(settings.target_modules)}
        metrics = {
            "train_losses": result.train_losses,
            "train_losses_unweighted": result.unweighted_train_losses,
            "learning_rates": result.learning_rates,
            "truncated_samples": result.truncated_samples,
            "epochs": result.history,
            "tokens": result.tokens,
            "tokens_per_second": round(result.tokens_per_second, 1),
            "train_seconds": round(result.wall_seconds, 2),
            "trainable_parameters": result.trainable_parameters,
            "total_parameters": result.total_parameters,
            "device": result.device,
            "dtype": result.dtype,
        }
        dataset = {key: training_dataset[key] for key in ("dataset_version", "dataset_hash", "days", "label_weights")}
        for name, content in (("training_config.json", config), ("metrics.json", metrics), ("dataset.json", dataset)):
            (staging / name).write_bytes(orjson.dumps(content, option=orjson.OPT_INDENT_2))
        publish_folder(staging, folder)
    except Exception:
        shutil.rmtree(staging, ignore_errors=True)
        # The store may be what failed: a folder left there has no registry entry, so no reader sees it.
        with contextlib.suppress(OSError):
            remove_tree(folder)
        raise
    registry.register(
        version,
        dataset_version=training_dataset["dataset_version"],
        dataset_hash=training_dataset["dataset_hash"],
        days=sorted(training_dataset["days"]),
        base_model=lora_training.base_model,
        run_id=context.run.run_id,
        train_loss=result.history[-1]["train_loss"],
    )
    final = result.history[-1]
    return dg.MaterializeResult(
        metadata={
            "version": version,
            "train_loss_per_step": dg.MetadataValue.table(
                records=[
                    dg.TableRecord({"step": step, "loss": loss, "loss_unweighted": plain, "learning_rate": rate})
                    for step, (loss, plain, rate) in enumerate(
                        zip(result.train_losses, result.unweighted_train_losses, result.learning_rates), 1
                    )
                ],
                schema=dg.TableSchema(
                    [dg.TableColumn("step", "int"), dg.TableColumn("loss", "float"),
                     dg.TableColumn("loss_unweighted", "float"), dg.TableColumn("learning_rate", "float")]
                ),
            ),
            "loss_per_epoch": dg.MetadataValue.table(
                records=[dg.TableRecord(epoch) for epoch in result.history],
                schema=dg.TableSchema(
                    [dg.TableColumn("epoch", "int"), dg.TableColumn("train_loss", "float"),
                     dg.TableColumn("train_loss_unweighted", "float"), dg.TableColumn("eval_loss", "float")]
                ),
            ),
            # Weighted (what the optimizer minimizes) and unweighted (comparable with the eval loss).
            "final_train_loss": dg.MetadataValue.float(final["train_loss"]),
            "final_train_loss_unweighted": dg.MetadataValue.float(final["train_loss_unweighted"]),
            "truncated_samples": result.truncated_samples,
            "final_eval_loss": dg.MetadataValue.float(final["eval_loss"]),
            "steps": len(result.train_losses),
            "tokens_per_second": round(result.tokens_per_second, 1),
            "train_seconds": round(result.wall_seconds, 2),
            "trainable_parameters": result.trainable_parameters,
            "total_parameters": result.total_parameters,
            "device": f"{result.device} ({result.dtype})",
            "dataset_version": training_dataset["dataset_version"],
            "dataset_hash": training_dataset["dataset_hash"],
            "path": dg.MetadataValue.path(str(folder)),
        }
    )


@dg.asset(
    deps=[LORA_ADAPTER, TRAINING_DATASET], group_name="training", kinds={"pytorch"}, owners=ML_OWNERS, code_version=TRAINING_CODE_VERSION
)
def model_evaluation(
    context: dg.AssetExecutionContext,
    warehouse: Warehouse,
    lora_training: LoraTraining,
    evaluator: Evaluator,
) -> dg.MaterializeResult:
    """The candidate against the model in use (the promoted version, or the base model when none
    is) and the base, on the held-out questions: answers generated by each, judged by the LLM
    judge with the RAG evaluator's labels (the A/B table), and eval losses. The gate promotes
    the version (data/models/current) or rejects it with the numbers."""
    from rag_sft.training import sft
    from rag_sft.training.generation import GenerationSettings, generate_answers

    registry = ModelRegistry(warehouse.models_dir())
    adapter_dir = _materialized_folder(context, LORA_ADAPTER, warehouse)
    dataset_dir = warehouse.local_copy(_materialized_folder(context, TRAINING_DATASET, warehouse))
    version = adapter_dir.name
    in_use = registry.current()
    in_use_name = in_use or "the base model"
    settings = lora_training.lora_settings()
    rows = [orjson.loads(line) for line in (dataset_dir / "eval.jsonl").read_bytes().splitlines()]
    held_out = _records(dataset_dir / "eval.jsonl", {}, evaluator.served_prompt_template)
    # eval.jsonl is ordered so that its first questions draw from every day and label in proportion.
    questions = rows[: evaluator.eval_questions]
    eval_composition = training_data.composition(
        [training_data.WindowRecord(row["sample_id"], row["question"], row["label"], row["date"]) for row in questions]
    )
    replay_path = dataset_dir / REPLAY_FILE
    replayed = [orjson.loads(line) for line in replay_path.read_bytes().splitlines()] if replay_path.is_file() else []

    def served(rows: list[dict]) -> list[str]:
        """What the service asks its model (docs/spec.md, "Rule 17: Judged as served"): no label hint, the service's
        template."""
        return [rules.served_prompt(row["prompt"], evaluator.served_prompt_template) for row in rows]

    generation = GenerationSettings(
        max_new_tokens=evaluator.max_new_tokens,
        batch_size=evaluator.generation_batch_size,
        temperature=evaluator.temperature,
        max_prompt_tokens=settings.max_length,
        seed=settings.seed,
    )
    # Each model once: the model in use is the base model until a version is promoted.
    models = {"candidate": (lora_training.base_model, warehouse.local_copy(adapter_dir) / "adapter")}
    if in_use:
        trained_from = orjson.loads((registry.root / in_use / "training_config.json").read_bytes())["base_model"]
        models[in_use] = (trained_from, warehouse.local_copy(registry.root / in_use) / "adapter")
    models["base"] = (lora_training.base_model, None)
    in_use_key = in_use or "base"
    answers, replay_answers, losses, throughput = {}, {}, {}, {}
    for name, (base_model, adapter) in models.items():
        model, tokenizer = sft.load_adapter(base_model, adapter) if adapter else sft.load_base(base_model)
        losses[name] = sft.evaluate(model, sft.encode(tokenizer, held_out, settings.max_length), settings.batch_size, tokenizer.pad_token_id)
        started = time.perf_counter()
        answers[name] = generate_answers(model, tokenizer, served(questions), generation)
        throughput[name] = round(len(questions) / (time.perf_counter() - started), 3)
        if replayed and evaluator.configured() and name in ("candidate", in_use_key):  # the replay row compares these two
            replay_answers[name] = generate_answers(model, tokenizer, served(replayed), generation)
        del model
    judged = _judge(evaluator, warehouse, questions, answers, in_use_key, replayed, replay_answers) if evaluator.configured() else None
    if judged is None:
        # A lower eval loss only says the candidate imitates the completions better: a person decides.
        losses_compared = promotion_decision(
            losses[in_use_key].overall,
            losses["candidate"].overall,
            losses[in_use_key].by_label,
            losses["candidate"].by_label,
            lora_training.max_label_regression,
            in_use=in_use_name,
        )
        decision = Decision(
            False,
            f"no judge configured: left a candidate for review (rag-sft model promote {version}); "
            f"eval loss against {in_use_name}: {losses_compared.reason}",
            review=True,
        )
        summaries = [summarize(ModelRun(name, [None] * len(a), [g.latency_s for g in a], [g.tokens for g in a])) for name, a in answers.items()]
        differences, kappa, test, replay_result = {}, None, None, None
    else:
        summaries, differences, kappa, test, replay_result, decision = judged
    warnings = judge_warnings(evaluator.model, questions) if evaluator.configured() else []
    table = table_rows(summaries, differences, test, replay_result)
    record = {
        "eval_loss": round(losses["candidate"].overall, 5),
        "base_eval_loss": round(losses["base"].overall, 5),
        "in_use_eval_loss": round(losses[in_use_key].overall, 5),
        "in_use": in_use_name,
        "eval_loss_by_label": {k: round(v, 5) for k, v in losses["candidate"].by_label.items()},
        "judge": evaluator.judge_label() if evaluator.configured() else None,
        "ab": summaries,
        "ab_change": {label: d.__dict__ for label, d in differences.items()},
        "ab_table": format_table(table),
        "judge_kappa": kappa,
        "gate_test": test.summary() if test else None,
        "replay_test": replay_result[0].summary() if replay_result else None,
        "judge_warnings": warnings,
        "answers_per_s": throughput,
        "eval_composition": eval_composition,
    }
    registry.update(version, **record)
    if decision.promote:
        registry.promote(version, decision.reason)
    elif decision.review:
        registry.update(version, reason=decision.reason)  # still a candidate
    else:
        registry.reject(version, decision.reason)
    outcome = "promoted" if decision.promote else "left a candidate for review" if decision.review else "rejected"
    context.log.info(f"{version}: {outcome}: {decision.reason}\n{record['ab_table']}")
    columns = [dg.TableColumn(name, "string") for name in table[0]]
    plottable = {
        f"{summary['model']}/{label}_rate": summary[label]["rate"]
        for summary in summaries
        for label in JUDGED_LABELS
        if summary[label]["rate"] is not None
    }
    return dg.MaterializeResult(
        metadata={
            "version": version,
            "in_use": in_use_name,
            "judge": record["judge"] or "none: the eval-loss gate",
            "ab_table": dg.MetadataValue.table([dg.TableRecord({k: v or "-" for k, v in row.items()}) for row in table], dg.TableSchema(columns)),
            **{key: dg.MetadataValue.float(value) for key, value in plottable.items()},
            **{
                f"{s['model']}/latency_p50_s": dg.MetadataValue.float(s["latency_s"]["p50"])
                for s in summaries
                if s["latency_s"]["p50"] is not None
            },
            **{f"{s['model']}/tokens_per_answer": dg.MetadataValue.float(s["tokens_per_answer"]) for s in summaries},
            **{f"{k}/answers_per_s": dg.MetadataValue.float(v) for k, v in throughput.items()},
            "eval_loss": record["eval_loss"],
            "base_eval_loss": record["base_eval_loss"],
            "in_use_eval_loss": record["in_use_eval_loss"],
            "eval_samples": losses["candidate"].samples,
            # Which days and labels the A/B questions came from.
            "eval_questions": len(questions),
            # What each model was asked, as the service asks it (the first question's prompt).
            "served_prompt_example": dg.MetadataValue.md(f"```\n{served(questions[:1])[0][:2000]}\n```") if questions else "",
            "eval_composition": _composition_table(eval_composition),
            "judge_kappa": dg.MetadataValue.json(kappa) if kappa is not None else "no audit set",
            **(
                {
                    "exact_test_p_value": dg.MetadataValue.float(test.p_value),
                    "fixed": test.fixed,
                    "broken": test.broken,
                    "judged_coverage": dg.MetadataValue.float(round(test.coverage, 4)),
                    "judged_pairs": test.pairs,
                }
                if test
                else {}
            ),
            **(
                {
                    "replay_failures": replay_result[0].questions,
                    "replay_fixed": replay_result[0].fixed,
                    "replay_broken": replay_result[0].broken,
                    "replay_p_value": dg.MetadataValue.float(replay_result[0].p_value),
                }
                if replay_result
                else {}
            ),
            "judge_warnings": dg.MetadataValue.json(warnings),
            "promoted": decision.promote,
            "status": registry.get(version)["status"],
            "decision": decision.reason,
            "current_version": registry.current() or "none",
        }
    )


def _judge(
    evaluator: Evaluator,
    warehouse: Warehouse,
    questions: list[dict],
    answers: dict,
    in_use_key: str,
    replayed: list[dict],
    replay_answers: dict,
):
    """The A/B table's columns, the candidate minus the model in use, the judge's agreement with
    the audit set (None without one), the exact test of the primary metric, the replay set's
    test and fixed rates (None without a replay set) and the gate's decision."""
    from rag_sft.io.llm.judge import JudgeItem, audit_agreement, judged_run, read_audit_set

    with evaluator.open(warehouse) as client:
        kappa = audit_agreement(client, read_audit_set(Path(evaluator.audit_path))) if evaluator.audit_path else None
        def judged_answers(name: str, rows: list[dict], generated: list) -> ModelRun:
            items = [
                JudgeItem(
                    row["question"],
                    tuple(prompt_documents(row["prompt"])),
                    answer.text,
                    row["completion"] if row.get("completion_strategy") in corrections.CAN_BE_RIGHT else None,  # a corrected answer
                )
                for row, answer in zip(rows, generated)
            ]
            return judged_run(client, name, items, [g.latency_s for g in generated], [g.tokens for g in generated])

        runs = {name: judged_answers(name, questions, generated) for name, generated in answers.items()}
        replay_runs = {name: judged_answers(name, replayed, generated) for name, generated in replay_answers.items()}
    price = JudgePrice(evaluator.prompt_price_per_mtok, evaluator.completion_price_per_mtok)
    differences = compare(runs["candidate"], runs[in_use_key], evaluator.bootstrap_resamples)
    gate = GateSettings(
        primary_metric=evaluator.primary_metric,
        alpha=evaluator.alpha,
        min_judged_pairs=evaluator.min_judged_pairs,
        min_judged_coverage=evaluator.min_judged_coverage,
        non_inferiority_margin=evaluator.non_inferiority_margin,
        min_kappa=evaluator.min_kappa,
        min_audit_per_label=evaluator.min_audit_per_label,
    )
    test = paired_test(runs["candidate"], runs[in_use_key], gate.primary_metric)
    replay_result = None
    if replay_runs:
        labels = [row["label"] for row in replayed]
        failing = {name: replay.still_failing(labels, run.verdicts) for name, run in replay_runs.items()}
        replay_test = paired_flags_test("replay", failing["candidate"], failing[in_use_key])
        replay_result = (replay_test, {name: fixed_rate(flags) for name, flags in failing.items()})
    in_use_name = "the base model" if in_use_key == "base" else in_use_key
    decision = judged_gate(test, differences, in_use_name, gate, kappa, replay_result[0] if replay_result else None)
    # An undefined kappa (a label the audit set never shows) is stored as null, not NaN.
    agreement = {label: {**a.__dict__, "kappa": None if math.isnan(a.kappa) else a.kappa} for label, a in kappa.items()} if kappa is not None else None
    return [summarize(run, price) for run in runs.values()], differences, agreement, test, replay_result, decision


def _records(path: Path, label_weights: dict[str, float], served_template: str | None = None):
    """Training records weighted by sample weight x the training split's label weight (1 for a
    label absent from it: the eval split is not weighted); with `served_template`, each with the
    prompt the service sends (docs/spec.md, "Rule 17: Judged as served")."""
    from rag_sft.training.sft import TrainingRecord

    records = []
    for line in path.read_bytes().splitlines():
        r = orjson.loads(line)
        prompt = r["prompt"] if served_template is None else rules.served_prompt(r["prompt"], served_template)
        records.append(TrainingRecord(prompt, r["completion"], r["label"], r["sample_weight"] * label_weights.get(r["label"], 1.0)))
    return records
