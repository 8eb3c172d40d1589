"""Each model of the comparison loaded once: its eval loss on the held-out records, its answers
to the A/B questions and, for the two models the replay row compares, to the replay set
(docs/model-gate.md, "What is compared"). torch and transformers are imported by the modules
this one uses, so import it only where training runs."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from rag_sft.training import sft
from rag_sft.training.settings import LoraSettings
from rag_sft.training.generation import Generated, GenerationSettings, generate_answers


@dataclass
class ModelAnswers:
    answers: dict[str, list[Generated]] = field(default_factory=dict)  # model -> answers to the A/B questions
    replay_answers: dict[str, list[Generated]] = field(default_factory=dict)  # model -> answers to the replay set
    losses: dict[str, sft.EvalLosses] = field(default_factory=dict)
    answers_per_s: dict[str, float] = field(default_factory=dict)


def answer_with_each_model(
    models: Mapping[str, tuple[str, Path | None]],
    held_out: Sequence[sft.TrainingRecord],
    prompts: Sequence[str],
    replay_prompts: Sequence[str],
    replayed_by: set[str],
    settings: LoraSettings,
    generation: GenerationSettings,
) -> ModelAnswers:
    """`models`: name -> (base model, adapter folder or None for the base itself); the models in
    `replayed_by` also answer `replay_prompts`."""
    result = ModelAnswers()
    for name, (base_model, adapter) in models.items():
        model, tokenizer = sft.load_adapter(base_model, adapter) if adapter else sft.load_base(base_model)
        result.losses[name] = sft.evaluate(model, sft.encode(tokenizer, held_out, settings.max_length), settings.batch_size, tokenizer.pad_token_id)
        started = time.perf_counter()
        result.answers[name] = generate_answers(model, tokenizer, prompts, generation)
        result.answers_per_s[name] = round(len(prompts) / (time.perf_counter() - started), 3) if prompts else 0.0
        if replay_prompts and name in replayed_by:
            result.replay_answers[name] = generate_answers(model, tokenizer, replay_prompts, generation)
        del model
    return result
