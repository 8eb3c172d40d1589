"""The training loop's basics (issue: what the flywheel learns must be right): a long prompt
keeps its question and its best-scored document, the learning rate warms up then decays,
accumulated micro-batches make the same step as one large batch, the unweighted train loss is
reported beside the weighted one, and QLoRA is refused where it cannot run."""

import pytest
import torch

from rag_sft.core import rules
from rag_sft.training import sft
from rag_sft.training.settings import LoraSettings
from rag_sft_tests.helpers import sample_records

QUESTION = "退款需要多久才能到账?"


def long_prompt() -> str:
    documents = [
        {"content": "第一名文档:退款在七个工作日内到账。" + "细节说明。" * 120},
        {"content": "第二名文档:节假日顺延。" + "补充说明。" * 120},
        {"content": "第三名文档:与问题无关的促销信息。" + "广告内容。" * 120},
    ]
    return rules.build_prompt(QUESTION, documents, rules.correction_instruction("factuality_error", "zh"), "zh", 500)


@pytest.mark.parametrize("max_length, documents_kept", [(200, 2), (320, 3)])
def test_a_long_prompt_keeps_its_question_and_its_best_scored_document(tiny_base, max_length, documents_kept):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_base)
    record = sft.TrainingRecord(long_prompt(), "七个工作日内到账。", "factuality_error", 1.0)
    [encoded] = sft.encode(tokenizer, [record], max_length)
    assert len(encoded.input_ids) <= max_length and encoded.truncated
    completion = tokenizer(record.completion, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    prompt = tokenizer.decode(encoded.input_ids[: -len(completion)], skip_special_tokens=True).replace(" ", "")
    assert prompt.startswith("[文档1]第一名文档:退款在")  # the best document, from its start
    assert prompt.endswith(QUESTION) and "请严格依据文档内容回答" in prompt  # instruction and question whole
    # Each kept document gets its share from its start; with less room the lowest-ranked goes first.
    starts = [prompt.find(f"[文档{n}]{name}名文档") for n, name in ((1, "第一"), (2, "第二"), (3, "第三"))]
    assert starts[:documents_kept] == sorted(starts[:documents_kept]) and -1 not in starts[:documents_kept]
    assert starts[documents_kept:] == [-1] * (3 - documents_kept)


def test_a_prompt_that_fits_is_not_marked_truncated(tiny_base):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_base)
    [encoded] = sft.encode(tokenizer, sample_records(1), 2048)
    assert not encoded.truncated


def test_warm_up_then_cosine_decay_and_the_unweighted_loss_beside_the_weighted(tiny_base, tmp_path):
    records = [sft.TrainingRecord(r.prompt, r.completion, r.label, 1.0) for r in sample_records(40)]
    settings = LoraSettings(learning_rate=1e-3, epochs=2, max_length=96, batch_size=4, seed=1, warmup_ratio=0.2)
    result = sft.train_lora(str(tiny_base), records[:32], records[32:], settings, tmp_path, log=lambda _: None)
    rates = result.learning_rates
    assert len(rates) == result.steps == 16
    assert rates[0] == 0.0 and max(rates) == pytest.approx(1e-3)  # 4 warm-up steps from 0 to the peak
    assert rates.index(max(rates)) == 4 and rates[-1] < 0.1 * max(rates)  # then cosine decay
    # Every weight is 1: the weighted loss is the unweighted one.
    assert result.unweighted_train_losses == pytest.approx(result.train_losses, rel=1e-4)
    assert set(result.history[-1]) >= {"train_loss", "train_loss_unweighted", "eval_loss"}


def test_two_accumulated_micro_batches_make_the_step_of_one_batch_twice_as_large(tiny_base, tmp_path):
    records = sample_records(16)
    common = dict(learning_rate=1e-3, epochs=1, max_length=96, seed=1, dropout=0.0, warmup_ratio=0.0)
    whole = sft.train_lora(str(tiny_base), records, records[:4], LoraSettings(batch_size=8, **common), tmp_path / "a", log=lambda _: None)
    accumulated = sft.train_lora(
        str(tiny_base), records, records[:4], LoraSettings(batch_size=4, gradient_accumulation_steps=2, **common),
        tmp_path / "b", log=lambda _: None,
    )
    assert whole.steps == accumulated.steps == 2
    assert accumulated.train_losses == pytest.approx(whole.train_losses, rel=1e-4)
    for (name, a), (_, b) in zip(whole.model.named_parameters(), accumulated.model.named_parameters()):
        if "lora_" in name:
            assert torch.allclose(a, b, atol=1e-5), name


def test_qlora_is_refused_without_a_cuda_gpu_before_anything_is_loaded(tiny_base, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU: the refusal is for machines without one")
    settings = LoraSettings(max_length=96, quantization="4bit")
    with pytest.raises(sft.QuantizationUnavailable, match="needs a CUDA GPU"):
        sft.train_lora(str(tiny_base), sample_records(4), sample_records(2), settings, tmp_path, log=lambda _: None)
    assert not (tmp_path / "adapter").exists()
