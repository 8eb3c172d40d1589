"""A tiny base model for the demo and the tests: no model hub is reachable from these machines.

A byte-level BPE tokenizer is trained on the corpus and a small model is initialised at random;
both are saved in Hugging Face format, so training loads them with the same `from_pretrained`
calls a real base model (a local path or a hub id) goes through. Two architectures:

- `llama`: a <bos> token and no chat template (a base model);
- `qwen2`: as Qwen2/2.5 instruct models ship, no <bos> token, ChatML special tokens and a chat
  template, tied embeddings and grouped-query attention.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

SPECIAL_TOKENS = {"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>"}
QWEN2_SPECIAL_TOKENS = {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>", "additional_special_tokens": ["<|im_start|>"]}
# Qwen2's ChatML template, without its default system turn.
CHATML_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def build_tiny_base_model(
    texts: Iterable[str],
    out_dir: Path,
    vocab_size: int = 4096,
    hidden_size: int = 64,
    layers: int = 2,
    heads: int = 4,
    max_positions: int = 1024,
    seed: int = 0,
    architecture: str = "llama",
) -> Path:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    qwen2 = architecture == "qwen2"
    if not qwen2 and architecture != "llama":
        raise ValueError(f"unknown architecture {architecture!r}: llama or qwen2")
    special = QWEN2_SPECIAL_TOKENS if qwen2 else SPECIAL_TOKENS
    names = [*(v for k, v in special.items() if k != "additional_special_tokens"), *special.get("additional_special_tokens", [])]
    tokenizer = Tokenizer(models.BPE(unk_token=None if qwen2 else SPECIAL_TOKENS["unk_token"]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=names,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, **special)
    if qwen2:
        fast.chat_template = CHATML_TEMPLATE

    shape = {
        "vocab_size": len(fast),
        "hidden_size": hidden_size,
        "intermediate_size": hidden_size * 2,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "max_position_embeddings": max_positions,
        "eos_token_id": fast.eos_token_id,
        "pad_token_id": fast.pad_token_id,
    }
    if qwen2:
        config = Qwen2Config(**shape, num_key_value_heads=max(heads // 2, 1), bos_token_id=None, tie_word_embeddings=True)
    else:
        config = LlamaConfig(**shape, num_key_value_heads=heads, bos_token_id=fast.bos_token_id, tie_word_embeddings=False)
    torch.manual_seed(seed)
    model = (Qwen2ForCausalLM if qwen2 else LlamaForCausalLM)(config)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    fast.save_pretrained(out_dir)
    return out_dir
