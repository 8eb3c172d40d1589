"""LoRA fine-tuning with peft and transformers (the `[train]` extra); imported only by the
training assets, so the daily pipeline never loads torch."""
