"""LoRA SFT on prompt/completion records: completion-only loss, weighted per sample.

Each sample's loss is the mean cross-entropy of its completion tokens (the prompt is context,
not a target), multiplied by its weight = sample weight x label weight
(docs/spec.md, "Rule 8: Sample weight", "Rule 9: Label weight"); a batch's loss is the mean of
those weighted losses, sum(w_i * loss_i) / n. (The weighted mean sum(w_i * loss_i) / sum(w_i)
would cancel the weights in a batch of one label.) Evaluation losses are the plain (unweighted)
mean of the per-sample losses, overall and per label.

Prompts are framed as the model is served: through the tokenizer's chat template (a user turn
and the assistant's header) when it has one, else after <bos> when the tokenizer has one
(Qwen2 tokenizers have none). Training, evaluation and generation share that framing, and the
same cut of a long prompt: the instruction and the question are kept whole, the documents share
what room is left (one budget each, a short one leaving its rest to the next) and the
lowest-ranked go first, so the best-scored document is the last to be cut.

The optimizer steps follow the usual recipe: a linear warm-up, then cosine decay of the learning
rate, gradients clipped to a norm, and optional accumulation over micro-batches.
"""

from __future__ import annotations

import math
import random
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from rag_sft.core.rules import PROMPT_SEPARATOR, prompt_parts
from rag_sft.training.settings import LoraSettings

IGNORE = -100


@dataclass(frozen=True)
class TrainingRecord:
    prompt: str
    completion: str
    label: str
    weight: float  # sample_weight x label_weight


@dataclass
class Encoded:
    input_ids: list[int]
    labels: list[int]  # IGNORE on the prompt
    weight: float
    label: str
    truncated: bool = False  # the prompt or the completion was cut to fit max_length


@dataclass
class EvalLosses:
    overall: float
    by_label: dict[str, float]
    samples: int


@dataclass
class TrainResult:
    train_losses: list[float]  # weighted loss of every optimizer step
    eval_losses: list[float]  # eval loss after every epoch
    tokens: int
    wall_seconds: float  # training steps only
    trainable_parameters: int
    total_parameters: int
    device: str
    dtype: str
    steps: int = 0
    history: list[dict] = field(default_factory=list)
    unweighted_train_losses: list[float] = field(default_factory=list)  # comparable with eval loss
    learning_rates: list[float] = field(default_factory=list)  # of every optimizer step
    truncated_samples: int = 0  # training samples cut to fit max_length
    model: object = field(default=None, repr=False)  # the trained PeftModel, in eval mode

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.wall_seconds if self.wall_seconds else 0.0


def device_and_dtype() -> tuple[torch.device, torch.dtype]:
    """CUDA with bf16 when there is a GPU, else the CPU in float32."""
    if torch.cuda.is_available():
        return torch.device("cuda"), torch.bfloat16
    return torch.device("cpu"), torch.float32


_PROMPT_SLOT = "\x00prompt\x00"


def prompt_frame(tokenizer) -> tuple[list[int], list[int]]:
    """The token ids before and after a prompt: the chat template's user turn and generation
    header when the tokenizer has a template, else <bos> when it has one, else nothing."""
    if tokenizer.chat_template:
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": _PROMPT_SLOT}], tokenize=False, add_generation_prompt=True
        )
        before, after = text.split(_PROMPT_SLOT)
        ids = tokenizer([before, after], add_special_tokens=False)["input_ids"]
        return ids[0], ids[1]
    return ([tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []), []


MIN_DOCUMENT_TOKENS = 32  # a document cut shorter than this is dropped instead


def _left_cut(ids: list[int], room: int) -> list[int]:
    """The last `room` ids: the question closes the prompt."""
    return ids[len(ids) - room :] if room > 0 else []


def fit_prompt(tokenizer, prompt: str, room: int, ids: list[int] | None = None) -> tuple[list[int], bool]:
    """The prompt's token ids in at most `room` tokens, and whether it had to be cut.

    The instruction and question are kept (cut from the left only if they alone are too long);
    the documents get equal budgets of what is left, a document shorter than its budget leaving
    the rest to the next, each cut at its end; documents beyond the room for MIN_DOCUMENT_TOKENS
    each are dropped, the lowest-ranked first.
    """
    ids = tokenizer(prompt, add_special_tokens=False)["input_ids"] if ids is None else ids
    if len(ids) <= room:
        return ids, False
    documents, rest = prompt_parts(prompt)
    if not documents:
        return _left_cut(ids, room), True
    separator = tokenizer(PROMPT_SEPARATOR, add_special_tokens=False)["input_ids"]
    rest_ids = [*separator, *tokenizer(rest, add_special_tokens=False)["input_ids"]]
    if len(rest_ids) >= room:
        return _left_cut(rest_ids[len(separator) :], room), True
    left = room - len(rest_ids)
    pieces = tokenizer(documents, add_special_tokens=False)["input_ids"]
    kept = min(len(pieces), max(1, left // (MIN_DOCUMENT_TOKENS + len(separator))))
    fitted: list[int] = []
    for number, piece in enumerate(pieces[:kept]):
        budget = left // (kept - number)
        joint = separator if number else []
        taken = piece[: max(0, budget - len(joint))]
        fitted.extend([*joint, *taken])
        left -= len(joint) + len(taken)
    return [*fitted, *rest_ids], True


def encode(tokenizer, records: Sequence[TrainingRecord], max_length: int) -> list[Encoded]:
    """Token ids of the framed prompt, the completion and <eos>, the prompt masked out of the labels.

    Long samples: the completion keeps at least half of the room, the prompt the rest (see
    `fit_prompt`).
    """
    before, after = prompt_frame(tokenizer)
    prompts = tokenizer([r.prompt for r in records], add_special_tokens=False)["input_ids"]
    completions = tokenizer([r.completion for r in records], add_special_tokens=False)["input_ids"]
    encoded = []
    room = max_length - len(before) - len(after)
    for record, prompt_ids, completion_ids in zip(records, prompts, completions):
        completion_ids = [*completion_ids, tokenizer.eos_token_id]
        kept_completion = completion_ids[: max(room // 2, room - len(prompt_ids))]
        fitted, cut = fit_prompt(tokenizer, record.prompt, room - len(kept_completion), prompt_ids)
        prompt_ids = [*before, *fitted, *after]
        labels = [IGNORE] * len(prompt_ids) + kept_completion
        truncated = cut or len(kept_completion) < len(completion_ids)
        encoded.append(Encoded([*prompt_ids, *kept_completion], labels, record.weight, record.label, truncated))
    return encoded


def encode_prompts(tokenizer, prompts: Sequence[str], max_prompt_tokens: int) -> list[list[int]]:
    """The framed prompts of `encode`, for generation: at most `max_prompt_tokens` each."""
    before, after = prompt_frame(tokenizer)
    room = max_prompt_tokens - len(before) - len(after)
    ids = tokenizer(list(prompts), add_special_tokens=False)["input_ids"]
    return [[*before, *fit_prompt(tokenizer, prompt, room, prompt_ids)[0], *after] for prompt, prompt_ids in zip(prompts, ids)]


def collate(batch: Sequence[Encoded], pad_id: int, device: torch.device) -> dict[str, torch.Tensor]:
    width = max(len(item.input_ids) for item in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, item in enumerate(batch):
        ids[row, : len(item.input_ids)] = torch.tensor(item.input_ids)
        labels[row, : len(item.labels)] = torch.tensor(item.labels)
        mask[row, : len(item.input_ids)] = 1
    weights = torch.tensor([item.weight for item in batch], dtype=torch.float32)
    return {"input_ids": ids.to(device), "attention_mask": mask.to(device), "labels": labels.to(device), "weights": weights.to(device)}


def per_sample_losses(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over each sample's completion tokens (next-token prediction)."""
    shift_logits = logits[:, :-1].float()
    shift_labels = labels[:, 1:]
    token_losses = F.cross_entropy(shift_logits.transpose(1, 2), shift_labels, ignore_index=IGNORE, reduction="none")
    targets = (shift_labels != IGNORE).float()
    return (token_losses * targets).sum(dim=1) / targets.sum(dim=1).clamp(min=1.0)


def weighted_completion_loss(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """The mean of the weighted sample losses, sum(w_i * loss_i) / n: a batch of heavy samples
    moves the model more than one of light samples, as rule 9 intends."""
    return weighted_mean(per_sample_losses(logits, labels), weights)


def weighted_mean(losses: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    return (losses * weights).mean()


def _batches(items: Sequence[Encoded], size: int, order: list[int]) -> Iterator[list[Encoded]]:
    for start in range(0, len(order), size):
        yield [items[index] for index in order[start : start + size]]


@torch.no_grad()
def evaluate(model, encoded: Sequence[Encoded], batch_size: int, pad_id: int) -> EvalLosses:
    device = next(model.parameters()).device
    model.eval()
    losses: list[float] = []
    for batch in _batches(encoded, batch_size, list(range(len(encoded)))):
        tensors = collate(batch, pad_id, device)
        logits = model(input_ids=tensors["input_ids"], attention_mask=tensors["attention_mask"]).logits
        losses.extend(per_sample_losses(logits, tensors["labels"]).tolist())
    by_label: dict[str, list[float]] = defaultdict(list)
    for item, loss in zip(encoded, losses):
        by_label[item.label].append(loss)
    overall = sum(losses) / len(losses) if losses else math.nan
    return EvalLosses(overall, {label: sum(v) / len(v) for label, v in sorted(by_label.items())}, len(losses))


class QuantizationUnavailable(RuntimeError):
    """4-bit (QLoRA) training was asked for where it cannot run."""


def require_quantization(quantization: str) -> None:
    """Refuse 4-bit loading before anything is loaded when there is no CUDA device or no
    bitsandbytes: it is never silently replaced by full precision."""
    if quantization == "none":
        return
    if not torch.cuda.is_available():
        raise QuantizationUnavailable(
            f"quantization={quantization!r} (QLoRA) needs a CUDA GPU; this machine has none. "
            "Set quantization='none' (RAG_SFT_TRAIN_QUANTIZATION=none) to train the full-precision base."
        )
    from importlib.util import find_spec

    if find_spec("bitsandbytes") is None:
        raise QuantizationUnavailable(f"quantization={quantization!r} (QLoRA) needs the bitsandbytes package: pip install bitsandbytes")


def load_base(base_model: str, quantization: str = "none"):
    """The base model and its tokenizer, from a local folder or a hub id; `quantization="4bit"`
    loads the base in 4-bit NF4 (QLoRA: bf16 compute, CUDA and bitsandbytes only)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    require_quantization(quantization)
    device, dtype = device_and_dtype()
    tokenizer = AutoTokenizer.from_pretrained(base_model)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if quantization == "4bit":
        from transformers import BitsAndBytesConfig

        config = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=dtype, bnb_4bit_use_double_quant=True
        )
        model = AutoModelForCausalLM.from_pretrained(base_model, dtype=dtype, quantization_config=config, device_map={"": 0})
        return model, tokenizer
    model = AutoModelForCausalLM.from_pretrained(base_model, dtype=dtype).to(device)
    return model, tokenizer


def load_adapter(base_model: str, adapter_dir: Path):
    from peft import PeftModel

    model, tokenizer = load_base(base_model)
    return PeftModel.from_pretrained(model, str(adapter_dir)), tokenizer


def train_lora(
    base_model: str,
    train: Sequence[TrainingRecord],
    eval_records: Sequence[TrainingRecord],
    settings: LoraSettings,
    out_dir: Path,
    log: Callable[[str], None] = print,
) -> TrainResult:
    """Train a LoRA adapter on `train`, evaluate on `eval_records` after every epoch, and save
    the adapter (`out_dir/adapter`) and the tokenizer (`out_dir/tokenizer`)."""
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import get_cosine_schedule_with_warmup

    random.seed(settings.seed)
    torch.manual_seed(settings.seed)
    model, tokenizer = load_base(base_model, settings.quantization)
    device, dtype = device_and_dtype()
    if settings.quantization != "none":
        model = prepare_model_for_kbit_training(model)
    model = get_peft_model(
        model,
        LoraConfig(
            r=settings.r,
            lora_alpha=settings.alpha,
            lora_dropout=settings.dropout,
            target_modules=list(settings.target_modules),
            task_type="CAUSAL_LM",
        ),
    )
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=settings.learning_rate)
    train_items = encode(tokenizer, train, settings.max_length)
    eval_items = encode(tokenizer, eval_records, settings.max_length)
    pad_id = tokenizer.pad_token_id
    micro_batches = math.ceil(len(train_items) / settings.batch_size)
    steps_per_epoch = math.ceil(micro_batches / settings.gradient_accumulation_steps)
    total_steps = max(1, steps_per_epoch * settings.epochs)
    scheduler = get_cosine_schedule_with_warmup(optimizer, math.ceil(settings.warmup_ratio * total_steps), total_steps)

    shuffler = random.Random(settings.seed)
    result = TrainResult([], [], 0, 0.0, trainable, total, str(device), str(dtype).removeprefix("torch."))
    result.truncated_samples = sum(item.truncated for item in train_items)
    for epoch in range(1, settings.epochs + 1):
        started = time.perf_counter()
        model.train()
        order = list(range(len(train_items)))
        shuffler.shuffle(order)
        batches = list(_batches(train_items, settings.batch_size, order))
        for first in range(0, len(batches), settings.gradient_accumulation_steps):
            group = batches[first : first + settings.gradient_accumulation_steps]
            samples = sum(len(batch) for batch in group)
            weighted = unweighted = 0.0
            optimizer.zero_grad()
            for batch in group:
                tensors = collate(batch, pad_id, device)
                with torch.autocast(device.type, dtype=dtype, enabled=device.type == "cuda"):
                    logits = model(input_ids=tensors["input_ids"], attention_mask=tensors["attention_mask"]).logits
                losses = per_sample_losses(logits, tensors["labels"])
                # Each micro-batch's share of the step's mean over all its samples.
                loss = weighted_mean(losses, tensors["weights"]) * len(batch) / samples
                loss.backward()
                weighted += loss.item()
                unweighted += losses.detach().sum().item() / samples
                result.tokens += int(tensors["attention_mask"].sum())
            torch.nn.utils.clip_grad_norm_(parameters, settings.max_grad_norm)
            result.learning_rates.append(scheduler.get_last_lr()[0])
            optimizer.step()
            scheduler.step()
            result.train_losses.append(round(weighted, 5))
            result.unweighted_train_losses.append(round(unweighted, 5))
            result.steps += 1
        result.wall_seconds += time.perf_counter() - started  # training time, evaluation excluded
        eval_loss = evaluate(model, eval_items, settings.batch_size, pad_id).overall
        result.eval_losses.append(round(eval_loss, 5))
        epoch_losses = result.train_losses[-steps_per_epoch:]
        epoch_unweighted = result.unweighted_train_losses[-steps_per_epoch:]
        result.history.append(
            {
                "epoch": epoch,
                "train_loss": round(sum(epoch_losses) / max(len(epoch_losses), 1), 5),
                "train_loss_unweighted": round(sum(epoch_unweighted) / max(len(epoch_unweighted), 1), 5),
                "eval_loss": round(eval_loss, 5),
            }
        )
        log(
            f"epoch {epoch}: train loss {result.history[-1]['train_loss']} "
            f"(unweighted {result.history[-1]['train_loss_unweighted']}), eval loss {eval_loss:.4f}"
        )
    model.save_pretrained(out_dir / "adapter")
    tokenizer.save_pretrained(out_dir / "tokenizer")
    result.model = model.eval()
    return result
