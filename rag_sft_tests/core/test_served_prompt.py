"""The prompt a candidate is judged on is the one the service sends: the documents and the
question, with no hint of what went wrong (docs/spec.md, "Rule 17: Judged as served")."""

import pytest

from rag_sft.core import rules

LABELS = [rules.FACTUALITY_ERROR, rules.INCOMPLETE_ANSWER, rules.LOW_RELEVANCE, rules.OVERCONFIDENCE, "unspecified"]
DOCS = [{"content": "退款在七个工作日内到账。\n\n节假日顺延。"}, {"content": "发票在订单页申请。"}]


@pytest.mark.parametrize("label", LABELS)
@pytest.mark.parametrize("language, question", [(rules.ZH, "退款多久到账?"), (rules.EN, "How long does a refund take?")])
def test_the_served_prompt_holds_no_label_instruction(label, language, question):
    training = rules.build_prompt(question, DOCS, rules.correction_instruction(label, language), language)
    served = rules.served_prompt(training)
    every_instruction = {text for texts in rules.INSTRUCTIONS.values() for text in texts.values()}
    assert not any(instruction in served for instruction in every_instruction)
    assert served.endswith(question) and "退款在七个工作日内到账。\n\n节假日顺延。" in served and "发票在订单页申请。" in served
    assert rules.SERVED_INSTRUCTION[language] in served


def test_the_services_own_template_is_filled_with_the_documents_and_the_question():
    training = rules.build_prompt("退款多久到账?", DOCS, rules.correction_instruction(rules.FACTUALITY_ERROR, rules.ZH), rules.ZH)
    served = rules.served_prompt(training, "参考资料:\n{documents}\n用户问题:{question}")
    assert served == "参考资料:\n[文档1] 退款在七个工作日内到账。\n\n节假日顺延。\n\n[文档2] 发票在订单页申请。\n用户问题:退款多久到账?"


def test_a_prompt_of_another_shape_is_left_as_it_is():
    assert rules.served_prompt("just a question") == "just a question"
