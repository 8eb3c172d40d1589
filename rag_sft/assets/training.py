"""lora_training_job: a dataset snapshot, a LoRA adapter trained on it, and its evaluation + gate.

torch, transformers and peft (the `[train]` extra) are imported inside the assets, so loading
the definitions and running the daily pipeline never pays for them.
"""

import shutil
from collections import Counter
from pathlib import Path

import dagster as dg
import orjson
import pyarrow as pa
from pydantic import Field

from rag_sft.assets.metadata import count_table
from rag_sft.assets.versions import make_version
from rag_sft.core import training_data
from rag_sft.core.exports import ALPACA, export_chunk, file_name, llama_factory_dataset_info
from rag_sft.core.promotion import promotion_decision
from rag_sft.core.trigger import ExportLedger, training_window
from rag_sft.io.dataset_versions import DatasetVersions
from rag_sft.io.export_ledger import update_ledger
from rag_sft.io.model_registry import ModelRegistry
from rag_sft.resources import LoraTraining, TrainerExports, Warehouse

DATASET_TAG = "rag_sft/dataset"


class TrainingDatasetConfig(dg.Config):
    version: str = Field(default="", description="Train on this dataset version (e.g. v002, or 'latest'); empty: use days.")
    days: dict[str, str] = Field(
        default_factory=dict,
        description="day -> sha256 of its JSONL, as the training sensor saw them; empty: the exportable days "
        "chosen by lora_training.last_days.",
    )


@dg.asset(group_name="training", kinds={"json"})
def training_dataset(
    context: dg.AssetExecutionContext,
    config: TrainingDatasetConfig,
    warehouse: Warehouse,
    lora_training: LoraTraining,
    trainer_exports: TrainerExports,
) -> dg.Output[dict]:
    """A snapshot of exportable days split into train and eval by a hash of the question."""
    if config.version:
        versions = DatasetVersions(warehouse.versions_dir())
        name = versions.latest() if config.version == "latest" else config.version
        try:
            wanted = {entry["day"]: entry["sha256"] for entry in versions.manifest(name or "latest")["days"]}
        except KeyError as error:
            raise dg.Failure(str(error.args[0]), allow_retries=False) from None
    elif config.days:
        wanted = dict(config.days)
    else:
        exportable = update_ledger(context.instance, ExportLedger()).exportable()
        wanted = {day: exported.sha256 for day, exported in training_window(exportable, lora_training.last_days).items()}
    if not wanted:
        raise dg.Failure("no exportable day to train on: materialize days whose checks pass first", allow_retries=False)
    # The days are frozen as a dataset version first: training reads the version's files, and
    # the model registry names the version.
    version, created, manifest = make_version(context.instance, warehouse, wanted)
    version_dir = warehouse.versions_dir() / version
    content_hash = manifest["hash"]
    folder = Path(warehouse.data_dir) / "training" / content_hash[:16]
    tmp = folder.with_name(f".{folder.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    counts = {"train": Counter(), "eval": Counter()}
    texts: dict[str, dict[str, list[str]]] = {split: {"prompt": [], "completion": []} for split in counts}
    with (tmp / "train.jsonl").open("wb") as train, (tmp / "eval.jsonl").open("wb") as held_out:
        for entry in manifest["days"]:
            for line in (version_dir / entry["file"]).read_bytes().splitlines():
                record = orjson.loads(line)
                split = "eval" if training_data.is_eval(record["question"], lora_training.eval_share) else "train"
                (held_out if split == "eval" else train).write(line + b"\n")
                counts[split][record["label"]] += 1
                texts[split]["prompt"].append(record["prompt"])
                texts[split]["completion"].append(record["completion"])
    write_trainer_exports(tmp, texts, trainer_exports, f"rag_sft_{content_hash[:16]}")
    (tmp / "manifest.json").write_bytes(
        orjson.dumps(
            {"dataset_version": version, "dataset_hash": content_hash, "days": wanted, "eval_share": lora_training.eval_share},
            option=orjson.OPT_INDENT_2,
        )
    )
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    context.add_output_metadata(
        {
            "dataset_version": version,
            "dataset_version_created": created,
            "dataset_hash": content_hash,
            "days": dg.MetadataValue.json(sorted(wanted)),
            "train_records": sum(counts["train"].values()),
            "eval_records": sum(counts["eval"].values()),
            "train_labels": count_table(counts["train"], "label"),
            "eval_labels": count_table(counts["eval"], "label"),
            "path": dg.MetadataValue.path(str(folder)),
            "trainer_exports": dg.MetadataValue.json(list(trainer_exports.formats)),
        }
    )
    return dg.Output({"dataset_version": version, "dataset_hash": content_hash, "dir": str(folder), "days": wanted})


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


@dg.asset(group_name="training", kinds={"pytorch"})
def lora_adapter(
    context: dg.AssetExecutionContext, training_dataset: dict, warehouse: Warehouse, lora_training: LoraTraining
) -> dg.Output[dict]:
    """LoRA SFT (peft + transformers) on the training split; a new model version folder."""
    from rag_sft.training import sft

    settings = lora_training.lora_settings()
    train = _records(Path(training_dataset["dir"]) / "train.jsonl")
    held_out = _records(Path(training_dataset["dir"]) / "eval.jsonl")
    if not train or not held_out:
        raise dg.Failure(f"the dataset has {len(train)} train and {len(held_out)} eval records; both must be non-empty")
    registry = ModelRegistry(Path(warehouse.data_dir) / "models")
    version, folder = registry.new_version_dir()
    context.log.info(f"training {version} on {len(train)} samples from {lora_training.base_model} ({sft.device_and_dtype()})")
    try:
        result = sft.train_lora(lora_training.base_model, train, held_out, settings, folder, log=context.log.info)
    except Exception:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    config = {"base_model": lora_training.base_model, **settings.__dict__, "target_modules": list(settings.target_modules)}
    metrics = {
        "train_losses": result.train_losses,
        "epochs": result.history,
        "tokens": result.tokens,
        "tokens_per_second": round(result.tokens_per_second, 1),
        "train_seconds": round(result.wall_seconds, 2),
        "trainable_parameters": result.trainable_parameters,
        "total_parameters": result.total_parameters,
        "device": result.device,
        "dtype": result.dtype,
    }
    dataset = {key: training_dataset[key] for key in ("dataset_version", "dataset_hash", "days")}
    for name, content in (("training_config.json", config), ("metrics.json", metrics), ("dataset.json", dataset)):
        (folder / name).write_bytes(orjson.dumps(content, option=orjson.OPT_INDENT_2))
    registry.register(
        version,
        dataset_version=training_dataset["dataset_version"],
        dataset_hash=training_dataset["dataset_hash"],
        days=sorted(training_dataset["days"]),
        base_model=lora_training.base_model,
        run_id=context.run.run_id,
        train_loss=result.history[-1]["train_loss"],
    )
    context.add_output_metadata(
        {
            "version": version,
            "train_loss_per_step": dg.MetadataValue.json(result.train_losses),
            "loss_per_epoch": dg.MetadataValue.json(result.history),
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
    return dg.Output({"version": version, "dir": str(folder)})


@dg.asset(group_name="training", kinds={"pytorch"})
def model_evaluation(
    context: dg.AssetExecutionContext,
    lora_adapter: dict,
    training_dataset: dict,
    warehouse: Warehouse,
    lora_training: LoraTraining,
) -> dg.MaterializeResult:
    """Eval loss of the base model and of base + the saved adapter, overall and per label; the
    gate then promotes the version (data/models/current) or rejects it with the reason."""
    from rag_sft.training import sft

    held_out = _records(Path(training_dataset["dir"]) / "eval.jsonl")
    settings = lora_training.lora_settings()
    base, tokenizer = sft.load_base(lora_training.base_model)
    encoded = sft.encode(tokenizer, held_out, settings.max_length)
    base_eval = sft.evaluate(base, encoded, settings.batch_size, tokenizer.pad_token_id)
    del base
    adapted, _ = sft.load_adapter(lora_training.base_model, Path(lora_adapter["dir"]) / "adapter")
    adapter_eval = sft.evaluate(adapted, encoded, settings.batch_size, tokenizer.pad_token_id)
    decision = promotion_decision(
        base_eval.overall, adapter_eval.overall, base_eval.by_label, adapter_eval.by_label, lora_training.max_label_regression
    )
    version = lora_adapter["version"]
    registry = ModelRegistry(Path(warehouse.data_dir) / "models")
    losses = {"base_eval_loss": round(base_eval.overall, 5), "eval_loss": round(adapter_eval.overall, 5)}
    registry.update(version, **losses, eval_loss_by_label={k: round(v, 5) for k, v in adapter_eval.by_label.items()})
    if decision.promote:
        registry.promote(version, decision.reason)
    else:
        registry.reject(version, decision.reason)
    context.log.info(f"{version}: {'promoted' if decision.promote else 'rejected'}: {decision.reason}")
    rows = [
        dg.TableRecord({"label": label, "base": round(base_eval.by_label[label], 5), "adapter": round(adapter_eval.by_label.get(label, float("nan")), 5)})
        for label in base_eval.by_label
    ]
    return dg.MaterializeResult(
        metadata={
            "version": version,
            **losses,
            "eval_samples": adapter_eval.samples,
            "by_label": dg.MetadataValue.table(
                rows,
                schema=dg.TableSchema(
                    columns=[dg.TableColumn("label", "string"), dg.TableColumn("base", "float"), dg.TableColumn("adapter", "float")]
                ),
            ),
            "promoted": decision.promote,
            "decision": decision.reason,
            "current_version": registry.current() or "none",
        }
    )


def _records(path: Path):
    from rag_sft.training.sft import TrainingRecord

    records = []
    for line in path.read_bytes().splitlines():
        r = orjson.loads(line)
        records.append(TrainingRecord(r["prompt"], r["completion"], r["label"], r["sample_weight"] * r["label_weight"]))
    return records
