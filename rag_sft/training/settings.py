"""Training settings as a plain value (no torch import), shared by the resource and the trainer."""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class LoraSettings:
    r: int = 8
    alpha: int = 16
    dropout: float = 0.05
    target_modules: tuple[str, ...] = DEFAULT_TARGET_MODULES
    learning_rate: float = 2e-4
    epochs: int = 1
    max_length: int = 2048
    batch_size: int = 8
    seed: int = 0
    gradient_accumulation_steps: int = 1  # effective batch size: batch_size x this
    warmup_ratio: float = 0.03  # share of the optimizer steps with a linear warm-up
    max_grad_norm: float = 1.0
    quantization: str = "none"  # "4bit": QLoRA (CUDA and bitsandbytes)
