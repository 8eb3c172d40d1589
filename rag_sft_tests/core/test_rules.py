import pytest

from rag_sft.core import rules


@pytest.mark.parametrize(
    "labels, expected",
    [
        (["overconfidence", "low_relevance", "incomplete_answer", "factuality_error"], "factuality_error"),
        (["overconfidence", "incomplete_answer", "low_relevance"], "incomplete_answer"),
        (["overconfidence", "low_relevance"], "low_relevance"),
        (["overconfidence"], "overconfidence"),
        (["made_up", "overconfidence"], "overconfidence"),
        ([], "unspecified"),
        (["citation_missing", "tone"], "citation_missing"),
    ],
)
def test_main_label_priority(labels, expected):
    assert rules.main_label(labels) == expected


def test_top_k_by_score_with_missing_scores_as_zero():
    docs = [
        {"id": "a", "content": "A", "score": 0.2},
        {"id": "b", "content": "B"},
        {"id": "c", "content": "C", "score": 0.9},
        {"id": "d", "content": "D", "score": None},
        {"id": "e", "content": "E", "score": 0.5},
    ]
    assert [d["id"] for d in rules.select_context(docs)] == ["c", "e", "a"]
    assert [d["id"] for d in rules.select_context(docs, top_k=5)] == ["c", "e", "a", "b", "d"]
    assert rules.select_context([], 3) == []


@pytest.mark.parametrize(
    "question, language",
    [
        ("退款需要多长时间?", "zh"),
        ("What is 退款政策?", "en"),  # English grammar, a Chinese term: English however long the term
        ("How does Kubernetes schedule 容器?", "en"),
        ("How long does a refund take?", "en"),
        ("API 限流规则是什么?", "zh"),
    ],
)
def test_question_language(question, language):
    assert rules.question_language(question) == language


def test_instruction_language_setting_overrides_script():
    assert rules.instruction_language("退款?", "en") == "en"
    assert rules.instruction_language("refund?", "zh") == "zh"
    with pytest.raises(ValueError):
        rules.instruction_language("refund?", "fr")


def test_instructions_per_label_and_language():
    assert "文档中未提及" in rules.correction_instruction("factuality_error", "zh")
    assert "do not mention" in rules.correction_instruction("factuality_error", "en")
    assert "关键信息" in rules.correction_instruction("incomplete_answer", "zh")
    assert "key point" in rules.correction_instruction("incomplete_answer", "en")
    assert "无关" in rules.correction_instruction("low_relevance", "zh")
    assert "unrelated" in rules.correction_instruction("low_relevance", "en")
    assert "“肯定”“必须”“一定”" in rules.correction_instruction("overconfidence", "zh")
    assert '"certainly"' in rules.correction_instruction("overconfidence", "en")
    assert rules.correction_instruction("unspecified", "zh") == "请根据文档内容重新回答问题。"
    assert rules.correction_instruction("citation_missing", "en") == "Answer the question again based on the documents."


@pytest.mark.parametrize("score, expected", [(0.0, 0.0), (0.4, 0.6), (0.5, 0.75), (0.66, 0.99), (0.7, 1.0), (1.0, 1.0)])
def test_confidence(score, expected):
    assert rules.confidence(score) == pytest.approx(expected)


def test_prompt_layout_cuts_docs_and_numbers_them():
    docs = [{"content": "甲" * 600}, {"content": "乙"}]
    prompt = rules.build_prompt("问题是什么?", docs, "请严格依据文档内容回答。", "zh")
    assert prompt == f"[文档1] {'甲' * 500}\n\n[文档2] 乙\n\n请严格依据文档内容回答。\n\n# 问题\n问题是什么?"
    english = rules.build_prompt("Why?", [{"content": "abc"}], "Answer.", "en", doc_max_chars=2)
    assert english == "[Document 1] ab\n\nAnswer.\n\n# Question\nWhy?"


def test_naive_completion_prefixes():
    assert rules.naive_completion("factuality_error", "答", "zh") == "【纠正】答"
    assert rules.naive_completion("incomplete_answer", "答", "zh") == "【补充】答"
    assert rules.naive_completion("overconfidence", "答", "zh") == "【调整】答"
    assert rules.naive_completion("low_relevance", "答", "zh") == "【重述】答"
    assert rules.naive_completion("unspecified", "a", "en") == "[Restated] a"


def test_sample_id():
    assert rules.sample_id("req-1", "overconfidence") == "req-1_overconfidence"


@pytest.mark.parametrize(
    "confidence, weight", [(0.6, 0.5), (0.69, 0.5), (0.7, 1.0), (0.85, 1.6), (1.0, 2.2)]
)
def test_sample_weight(confidence, weight):
    assert rules.sample_weight(confidence) == pytest.approx(weight)


def test_sample_weight_is_capped():
    assert rules.sample_weight(1.0, slope=40.0) == 5.0


def test_label_weights():
    weights = rules.label_weights({"factuality_error": 60, "low_relevance": 30, "overconfidence": 10, "gone": 0})
    assert weights == pytest.approx(
        {"factuality_error": 1.5 + 0.6 * 100 / 60, "low_relevance": 1.3 + 0.6 * 100 / 30, "overconfidence": 1.0 + 0.6 * 10}
    )
