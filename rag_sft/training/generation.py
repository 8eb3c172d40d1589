"""Answers from a model to held-out prompts: batched, greedy unless a temperature is given.

The prompts are framed as in training (`sft.encode_prompts`: the chat template when the
tokenizer has one). Each answer records its latency (the wall time of its batch: a batched
server returns the batch's answers together) and its generated tokens (up to its <eos>).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from rag_sft.training import sft


@dataclass(frozen=True)
class Generated:
    text: str
    tokens: int
    latency_s: float


@dataclass(frozen=True)
class GenerationSettings:
    max_new_tokens: int = 128
    batch_size: int = 8
    temperature: float = 0.0  # 0: greedy
    max_prompt_tokens: int = 512
    seed: int = 0


@torch.no_grad()
def generate_answers(model, tokenizer, prompts: Sequence[str], settings: GenerationSettings) -> list[Generated]:
    device = next(model.parameters()).device
    model.eval()
    pad_id = tokenizer.pad_token_id
    eos_id = tokenizer.eos_token_id
    encoded = sft.encode_prompts(tokenizer, prompts, settings.max_prompt_tokens)
    torch.manual_seed(settings.seed)
    answers: list[Generated] = []
    for start in range(0, len(encoded), settings.batch_size):
        batch = encoded[start : start + settings.batch_size]
        width = max(len(ids) for ids in batch)
        # Left padding: every prompt ends where generation starts.
        ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, prompt_ids in enumerate(batch):
            ids[row, width - len(prompt_ids) :] = torch.tensor(prompt_ids)
            mask[row, width - len(prompt_ids) :] = 1
        sampling = {"do_sample": True, "temperature": settings.temperature} if settings.temperature > 0 else {"do_sample": False}
        started = time.perf_counter()
        output = model.generate(
            input_ids=ids.to(device),
            attention_mask=mask.to(device),
            max_new_tokens=settings.max_new_tokens,
            pad_token_id=pad_id,
            eos_token_id=eos_id,
            **sampling,
        )
        latency = time.perf_counter() - started
        for row in output[:, width:].tolist():
            tokens = row.index(eos_id) + 1 if eos_id in row else len(row)
            text = tokenizer.decode(row[:tokens], skip_special_tokens=True).strip()
            answers.append(Generated(text, tokens, latency))
    return answers
