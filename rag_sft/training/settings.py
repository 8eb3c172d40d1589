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
    max_length: int = 512
    batch_size: int = 8
    seed: int = 0
