"""Train on the prompt the service sends, or on the correction prompt? The measured comparison
behind `lora_training.served_prompt_share` (docs/model-gate.md, "Trained as served").

Takes a training dataset folder (data/training/<hash>/ after `make run`), trains one adapter per
share from the same base model and seed, and measures each on the eval split:
  - eval loss of the corrections given the served prompt (what production asks),
  - eval loss given the correction prompt (the label's instruction: what training used),
  - the stand-in judge's verdict on answers generated from the served prompt (the share of eval
    questions whose answer is free of the failure's label).

    .venv/bin/python scripts/served_prompt_share.py data/training/<hash> --shares 0,0.5,1
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import orjson

from rag_sft.core import rules, training_data
from rag_sft.core.model_comparison import judge_messages, prompt_documents
from rag_sft.resources import Evaluator, LoraTraining, Warehouse
from rag_sft.testing.openai_server import stand_in_verdict
from rag_sft.training import sft
from rag_sft.training.generation import GenerationSettings, generate_answers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path, help="a training dataset folder (train.jsonl, eval.jsonl, manifest.json)")
    parser.add_argument("--shares", default="0,0.5,1")
    parser.add_argument("--eval-questions", type=int, default=64)
    args = parser.parse_args()
    lora = LoraTraining()
    settings = lora.lora_settings()
    template = Evaluator().served_prompt_template
    manifest = orjson.loads((args.folder / "manifest.json").read_bytes())
    # The folder's train split may hold served prompts already: every record starts from its
    # correction prompt, as exported in the dataset version it was built from.
    version = Warehouse().versions_dir() / manifest["dataset_version"]
    exported = {
        record["sample_id"]: record["prompt"]
        for entry in orjson.loads((version / "manifest.json").read_bytes())["days"]
        for record in map(orjson.loads, (version / entry["file"]).read_bytes().splitlines())
    }
    rows = [{**row, "prompt": exported[row["sample_id"]]} for row in map(orjson.loads, (args.folder / "train.jsonl").read_bytes().splitlines())]
    held_out = [orjson.loads(line) for line in (args.folder / "eval.jsonl").read_bytes().splitlines()]

    def records(rows, served: bool, share: float = 0.0):
        weights = manifest["label_weights"]
        return [
            sft.TrainingRecord(
                rules.served_prompt(r["prompt"], template) if served or training_data.trains_on_served_prompt(r["sample_id"], share) else r["prompt"],
                r["completion"], r["label"], r["sample_weight"] * weights.get(r["label"], 1.0),
            )
            for r in rows
        ]

    generation = GenerationSettings(max_new_tokens=64, batch_size=8, temperature=0.0, max_prompt_tokens=settings.max_length, seed=0)
    questions = held_out[: args.eval_questions]
    for share in [float(s) for s in args.shares.split(",")]:
        with tempfile.TemporaryDirectory() as out:
            result = sft.train_lora(lora.base_model, records(rows, False, share), records(held_out, False), settings, Path(out), log=lambda _: None)
        model, tokenizer = result.model, sft.load_base(lora.base_model)[1]
        loss = {
            name: sft.evaluate(model, sft.encode(tokenizer, records(held_out, served), settings.max_length), settings.batch_size, tokenizer.pad_token_id).overall
            for name, served in (("served", True), ("correction", False))
        }
        answers = generate_answers(model, tokenizer, [rules.served_prompt(r["prompt"], template) for r in questions], generation)
        free = sum(
            r["label"] not in stand_in_verdict(judge_messages(r["question"], prompt_documents(r["prompt"]), a.text)[-1]["content"])["labels"]
            for r, a in zip(questions, answers)
        )
        print(json.dumps({"served_prompt_share": share, "train_records": len(rows), "eval_loss_served_prompt": round(loss["served"], 4),
                          "eval_loss_correction_prompt": round(loss["correction"], 4),
                          "stand_in_judge_free_of_label": f"{free}/{len(questions)}"}), flush=True)


if __name__ == "__main__":
    main()
