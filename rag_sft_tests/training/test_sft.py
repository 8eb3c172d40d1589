"""LoRA SFT on the tiny local model: the loss is the weighted completion loss, training lowers
eval loss, and the saved adapter reloads to the same logits."""

import math

import pytest
import torch

from rag_sft.training import sft
from rag_sft.training.settings import LoraSettings
from rag_sft_tests.helpers import sample_records

# Peak learning rate: the cosine schedule (with its warm-up) averages about half of it.
FAST = LoraSettings(learning_rate=1e-2, epochs=3, max_length=96, batch_size=8, seed=1)


def test_the_batch_loss_is_the_mean_of_weighted_per_sample_completion_losses():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 7)
    labels = torch.tensor([[-100, -100, 3, 4, 1], [-100, 2, 6, -100, -100]])
    weights = torch.tensor([0.5 * 2.0, 1.5 * 1.2])  # sample weight x label weight
    by_hand = []
    for row in range(2):
        token_losses = [
            -torch.log_softmax(logits[row, t - 1], dim=-1)[labels[row, t]].item()
            for t in range(1, 5)
            if labels[row, t] != -100
        ]
        by_hand.append(sum(token_losses) / len(token_losses))
    expected = (weights[0] * by_hand[0] + weights[1] * by_hand[1]) / 2
    assert sft.weighted_completion_loss(logits, labels, weights).item() == pytest.approx(expected.item(), rel=1e-6)
    assert sft.per_sample_losses(logits, labels).tolist() == pytest.approx(by_hand, rel=1e-6)


def test_encoding_masks_the_prompt_and_cuts_long_prompts_from_the_left(tiny_base):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_base)
    record = sample_records(1)[0]
    long = sft.TrainingRecord("很长的文档。" * 200 + "\n# 问题\n退款需要多久?", record.completion, record.label, 1.0)
    [short] = sft.encode(tokenizer, [record], 1024)
    prompt = tokenizer(record.prompt, add_special_tokens=False)["input_ids"]
    completion = tokenizer(record.completion, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    assert short.input_ids == [tokenizer.bos_token_id, *prompt, *completion]
    assert short.labels == [-100] * (1 + len(prompt)) + completion

    [cut] = sft.encode(tokenizer, [long], 2 * len(completion) + 20)
    assert len(cut.input_ids) == 2 * len(completion) + 20
    assert [t for t in cut.labels if t != -100] == completion  # the whole completion is kept
    assert tokenizer.decode(cut.input_ids[1 : -len(completion)]).endswith("退款需要多久?")  # the prompt's end


def test_training_lowers_eval_loss_and_the_adapter_reloads_to_identical_logits(tiny_base, tmp_path):
    records = sample_records(96)
    train, held_out = records[:80], records[80:]
    base, tokenizer = sft.load_base(str(tiny_base))
    encoded = sft.encode(tokenizer, held_out, FAST.max_length)
    before = sft.evaluate(base, encoded, 8, tokenizer.pad_token_id)

    result = sft.train_lora(str(tiny_base), train, held_out, FAST, tmp_path, log=lambda _: None)
    after = sft.evaluate(result.model, encoded, 8, tokenizer.pad_token_id)
    assert after.overall < before.overall - 0.1
    assert result.eval_losses[-1] == pytest.approx(after.overall, abs=1e-4)
    # Step losses scale with their batch's weights: compare epochs.
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    assert 0 < result.trainable_parameters < result.total_parameters and result.tokens > 0
    assert set(after.by_label) == {record.label for record in held_out}

    reloaded, _ = sft.load_adapter(str(tiny_base), tmp_path / "adapter")
    batch = sft.collate(encoded[:4], tokenizer.pad_token_id, torch.device("cpu"))
    with torch.no_grad():
        original = result.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        again = reloaded.eval()(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    assert torch.equal(original, again)
    assert not math.isnan(after.overall)


def test_a_batch_of_one_label_still_feels_its_weight():
    """Rule 9: the weighted mean would cancel a one-label batch's weight; the mean of weighted
    losses scales the loss, and the gradient, by it."""
    torch.manual_seed(0)
    logits = torch.randn(3, 5, 7, requires_grad=True)
    labels = torch.tensor([[-100, 2, 3, 4, 1]] * 3)
    light = sft.weighted_completion_loss(logits, labels, torch.full((3,), 1.0))
    heavy = sft.weighted_completion_loss(logits, labels, torch.full((3,), 5.0))
    assert heavy.item() == pytest.approx(5 * light.item(), rel=1e-6)
    (light_grad,) = torch.autograd.grad(light, logits)
    (heavy_grad,) = torch.autograd.grad(heavy, logits)
    assert torch.allclose(heavy_grad, 5 * light_grad)


def test_qwen2_prompts_go_through_the_chat_template_without_a_bos_token(tiny_qwen2):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_qwen2)
    assert tokenizer.bos_token_id is None and tokenizer.chat_template
    record = sample_records(1)[0]
    [encoded] = sft.encode(tokenizer, [record], 1024)
    completion = tokenizer(record.completion, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    prompt_part = encoded.input_ids[: -len(completion)]
    served = tokenizer.apply_chat_template([{"role": "user", "content": record.prompt}], tokenize=False, add_generation_prompt=True)
    assert tokenizer.decode(prompt_part) == served  # the prompt as an instruct model is served
    assert encoded.labels == [-100] * len(prompt_part) + completion
    assert None not in encoded.input_ids
    # Generation frames prompts the same way.
    assert sft.encode_prompts(tokenizer, [record.prompt], 1024) == [prompt_part]

    long = sft.TrainingRecord("很长的文档。" * 200 + "\n# 问题\n退款需要多久?", record.completion, record.label, 1.0)
    [cut] = sft.encode(tokenizer, [long], 2 * len(completion) + 40)
    text = tokenizer.decode(cut.input_ids[: -len(completion)])
    assert text.startswith("<|im_start|>user\n") and text.endswith("退款需要多久?<|im_end|>\n<|im_start|>assistant\n")


def test_a_qwen2_style_model_trains_and_its_adapter_reloads_to_identical_logits(tiny_qwen2, tmp_path):
    from rag_sft.training.generation import GenerationSettings, generate_answers

    records = sample_records(64)
    train, held_out = records[:56], records[56:]
    result = sft.train_lora(str(tiny_qwen2), train, held_out, FAST, tmp_path, log=lambda _: None)
    # Step losses scale with their batch's weights: compare epochs.
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    assert result.eval_losses[-1] < result.eval_losses[0]

    reloaded, tokenizer = sft.load_adapter(str(tiny_qwen2), tmp_path / "adapter")
    encoded = sft.encode(tokenizer, held_out, FAST.max_length)
    batch = sft.collate(encoded, tokenizer.pad_token_id, torch.device("cpu"))
    with torch.no_grad():
        original = result.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        again = reloaded.eval()(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    assert torch.equal(original, again)

    settings = GenerationSettings(max_new_tokens=12, batch_size=4, max_prompt_tokens=64)
    answers = generate_answers(reloaded, tokenizer, [r.prompt for r in held_out], settings)
    assert len(answers) == len(held_out)
    assert all(0 < a.tokens <= 12 and a.latency_s > 0 for a in answers)
    # Greedy: the same prompts give the same answers, whatever the batch they fall in.
    again = generate_answers(reloaded, tokenizer, [r.prompt for r in held_out][:1], settings)
    assert again[0].text == answers[0].text
