"""The SFT rules 1-9 (docs/spec.md, "Rules") as plain functions.

Every default here is a configurable setting of the pipeline (see `SftRules`); the numbers
are the ones the source articles give.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

FACTUALITY_ERROR = "factuality_error"
INCOMPLETE_ANSWER = "incomplete_answer"
LOW_RELEVANCE = "low_relevance"
OVERCONFIDENCE = "overconfidence"
UNSPECIFIED = "unspecified"

LABEL_PRIORITY = (FACTUALITY_ERROR, INCOMPLETE_ANSWER, LOW_RELEVANCE, OVERCONFIDENCE)

ZH = "zh"
EN = "en"
LANGUAGES = (ZH, EN)

LOW_CONFIDENCE = "low_confidence"
LABEL_CAP = "label_cap"  # over its label's cap in a training set (docs/spec.md, "Rule 12: Balance")
# Repeats a kept sample of the day or an earlier day (docs/spec.md, "Rule 13: One sample per question").
NEAR_DUPLICATE = "near_duplicate"
# A sample whose completion could not be written: "completion_" + why (core/llm.py reasons);
# it is asked again on the next materialization.
COMPLETION_FAILED_PREFIX = "completion_"
# The naive strategy has no answer to prefix: filtered under this reason itself, on every run.
EMPTY_ANSWER = "empty_answer"
FINAL_COMPLETION_FAILURES = frozenset({EMPTY_ANSWER})


@dataclass(frozen=True)
class RuleSettings:
    """The numbers the rules use; defaults are those of docs/spec.md, "Rules"."""

    top_k: int = 3
    doc_max_chars: int = 500
    confidence_factor: float = 1.5
    min_confidence: float = 0.6
    instruction_language: str = "auto"  # "auto" (by the question's script), "zh" or "en"
    weight_baseline: float = 0.7
    weight_below_baseline: float = 0.5
    weight_slope: float = 4.0
    max_sample_weight: float = 5.0
    label_rarity_factor: float = 0.6
    label_base_weights: Mapping[str, float] = field(
        default_factory=lambda: {FACTUALITY_ERROR: 1.5, LOW_RELEVANCE: 1.3}
    )
    default_label_base_weight: float = 1.0
    redact_pii: bool = True  # personal data replaced by placeholders before prompts (core/pii.py)


# Rule 1 ---------------------------------------------------------------------------------------
def main_label(labels: Sequence[str]) -> str:
    """The highest-priority known label; `unspecified` when none; else the first unknown one."""
    if not labels:
        return UNSPECIFIED
    for label in LABEL_PRIORITY:
        if label in labels:
            return label
    return labels[0]


# Rule 2 ---------------------------------------------------------------------------------------
def select_context(docs: Sequence[Mapping], top_k: int = 3) -> list[Mapping]:
    """The `top_k` docs by score, highest first; a missing score counts as 0, ties keep order."""
    return sorted(docs, key=lambda doc: doc.get("score") or 0.0, reverse=True)[:top_k]


# Rule 3 ---------------------------------------------------------------------------------------
# Which language a mixed question is in is decided the way a reader does: by its grammar, not by
# the share of Latin letters (product names, APIs and file names are Latin in either language).
# The words below carry each language's grammar; the same patterns run in Python here and in
# Arrow's RE2 over whole columns (tables.question_languages), ASCII word boundaries in both.
HAN_PATTERN = "[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]"
LATIN_PATTERN = "[A-Za-z]"
ENGLISH_GRAMMAR_WORDS = (
    "what how why when where which who whose whom is are was were be been am do does did doesn don "
    "can could should would will shall may might must the an to of in on at for with without from by "
    "about between into than and or but not no if then my our your their its it this that these those "
    "we you they there here"
).split()
# Lower case, or capitalized at the start of a sentence; "I" and "a" only as written in prose
# (an upper-case "IN" or "A" is a SQL keyword or a variant name, not English grammar).
ENGLISH_GRAMMAR_PATTERN = (
    "\\b(?:" + "|".join(f"[{word[0]}{word[0].upper()}]{word[1:]}" for word in ENGLISH_GRAMMAR_WORDS) + "|I|a)\\b"
)
CHINESE_GRAMMAR_PATTERN = (
    "为什么|为何|如何|怎么|怎样|什么|哪些|哪个|是否|能否|可以|需要|应该|还是|或者|以及|如果|因为|所以|但是|然后|"
    "[的了吗呢吧啊是在和与及或有没不把被从到对给里中时后请我你它该这那哪么会能要用]"
)
_HAN = re.compile(HAN_PATTERN)
_ENGLISH_GRAMMAR = re.compile(ENGLISH_GRAMMAR_PATTERN, re.ASCII)
_CHINESE_GRAMMAR = re.compile(CHINESE_GRAMMAR_PATTERN)


def question_language(question: str) -> str:
    """`zh` when the question is Chinese to a reader, `en` otherwise.

    No Han character: English. Han text and no English grammar word ("Kubernetes Deployment 如何回滚?",
    "Spring Cloud Gateway 限流"): Chinese, whatever names it mentions. Both: Chinese when it has at
    least as many Chinese grammar words as English ones ("Python 里 for 循环和 while 有什么区别?"),
    else English ("How does Kubernetes schedule 容器?", "What does 中国银行 mean?"). How many Han
    characters it holds decides nothing once English grammar is present: an English question
    quoting a long Chinese name is still English.
    """
    counts = (_HAN, _CHINESE_GRAMMAR, _ENGLISH_GRAMMAR)
    return ZH if reads_as_chinese(*(len(pattern.findall(question)) for pattern in counts)) else EN


def reads_as_chinese(han, chinese_words, english_words):
    """The decision of `question_language` from its three counts: ints, or numpy arrays of them
    (tables.question_languages), so both forms share it."""
    return (han > 0) & ((english_words == 0) | (chinese_words >= english_words))


def instruction_language(question: str, setting: str = "auto") -> str:
    if setting == "auto":
        return question_language(question)
    if setting not in LANGUAGES:
        raise ValueError(f"instruction_language must be 'auto', 'zh' or 'en', got {setting!r}")
    return setting


INSTRUCTIONS = {
    ZH: {
        FACTUALITY_ERROR: "请严格依据文档内容回答,避免任何事实性错误。如果文档未提及相关信息,请明确回答“文档中未提及”。",
        INCOMPLETE_ANSWER: "请根据文档内容重新回答问题,尽量覆盖文档中的所有关键信息,避免遗漏重要细节。",
        LOW_RELEVANCE: "请重新理解问题,使回答紧扣问题本身和文档内容,不要引入与文档无关的信息。",
        OVERCONFIDENCE: "请用更谨慎、中性的语气回答,避免使用“肯定”“必须”“一定”等过度自信的表达。",
        None: "请根据文档内容重新回答问题。",
    },
    EN: {
        FACTUALITY_ERROR: (
            "Answer strictly from the documents and avoid any factual error. "
            "If the documents do not contain the information, say clearly that they do not mention it."
        ),
        INCOMPLETE_ANSWER: (
            "Answer the question again from the documents, covering every key point they hold "
            "without leaving out important details."
        ),
        LOW_RELEVANCE: (
            "Re-read the question and keep the answer on the question and the documents; "
            "do not bring in anything unrelated to them."
        ),
        OVERCONFIDENCE: (
            'Answer in a cautious, neutral tone and avoid absolute words such as "certainly", '
            '"must" or "definitely".'
        ),
        None: "Answer the question again based on the documents.",
    },
}


def correction_instruction(label: str, language: str) -> str:
    """How the model should fix this kind of error, in the question's language."""
    texts = INSTRUCTIONS[language]
    return texts.get(label, texts[None])


# Rule 4 ---------------------------------------------------------------------------------------
def confidence(score: float, factor: float = 1.5) -> float:
    return min(1.0, score * factor)


# Rule 5 ---------------------------------------------------------------------------------------
DOC_TAG = {ZH: "[文档{}]", EN: "[Document {}]"}
QUESTION_HEADING = {ZH: "# 问题", EN: "# Question"}
PROMPT_SEPARATOR = "\n\n"


def build_prompt(
    question: str,
    context_docs: Iterable[Mapping],
    instruction: str,
    language: str,
    doc_max_chars: int = 500,
) -> str:
    """Numbered docs cut to `doc_max_chars`, then the instruction, then the question."""
    tag, heading = DOC_TAG[language], QUESTION_HEADING[language]
    parts = [f"{tag.format(i)} {doc['content'][:doc_max_chars]}" for i, doc in enumerate(context_docs, 1)]
    parts.append(instruction)
    parts.append(f"{heading}\n{question}")
    return PROMPT_SEPARATOR.join(parts)


_DOC_START = re.compile(r"(?:^|\n\n)(?=\[(?:文档|Document )\d+\] )")


def prompt_parts(prompt: str) -> tuple[list[str], str]:
    """A rule-5 prompt cut into its documents (each with its tag, best-ranked first) and the rest
    (the instruction and the question), so that a length budget can drop documents, not words of
    the question. A prompt of another shape is all rest."""
    heading = min((i for h in QUESTION_HEADING.values() if (i := prompt.find(f"{PROMPT_SEPARATOR}{h}\n")) >= 0), default=-1)
    if heading < 0:
        return [], prompt
    instruction = prompt.rfind(PROMPT_SEPARATOR, 0, heading)  # instructions hold no blank line
    region = prompt[:instruction] if instruction >= 0 else ""
    starts = [m.end() for m in _DOC_START.finditer(region)]
    if not starts or starts[0] != 0:
        return [], prompt
    documents = [region[start : (starts[n + 1] - len(PROMPT_SEPARATOR)) if n + 1 < len(starts) else len(region)]
                 for n, start in enumerate(starts)]
    return documents, prompt[instruction + len(PROMPT_SEPARATOR) :]


# Rule 17: what the service itself asks its model, with no hint of what went wrong.
SERVED_INSTRUCTION = {ZH: "请根据文档内容回答问题。", EN: "Answer the question based on the documents."}


def served_prompt(prompt: str, template: str = "") -> str:
    """The prompt the RAG service sends for the same documents and question: a rule-5 training
    prompt with its label-specific correction instruction replaced. `template`: the service's own,
    with `{documents}` (the numbered documents) and `{question}`; empty: the rule-5 layout with
    the plain `SERVED_INSTRUCTION`. A prompt of another shape is returned as it is."""
    documents, rest = prompt_parts(prompt)
    language, heading = next(
        ((language, h) for language, h in QUESTION_HEADING.items() if f"{PROMPT_SEPARATOR}{h}\n" in f"{PROMPT_SEPARATOR}{rest}"),
        (None, None),
    )
    if language is None:
        return prompt
    question = rest[rest.index(f"{heading}\n") + len(heading) + 1 :]
    if template:
        return template.format(documents=PROMPT_SEPARATOR.join(documents), question=question)
    return PROMPT_SEPARATOR.join([*documents, SERVED_INSTRUCTION[language], f"{heading}\n{question}"])


# Rule 6, naive strategy -----------------------------------------------------------------------
NAIVE_PREFIXES = {
    ZH: {FACTUALITY_ERROR: "【纠正】", INCOMPLETE_ANSWER: "【补充】", OVERCONFIDENCE: "【调整】", None: "【重述】"},
    EN: {
        FACTUALITY_ERROR: "[Corrected] ",
        INCOMPLETE_ANSWER: "[Supplemented] ",
        OVERCONFIDENCE: "[Adjusted] ",
        None: "[Restated] ",
    },
}


def naive_prefix(label: str, language: str) -> str:
    prefixes = NAIVE_PREFIXES[language]
    return prefixes.get(label, prefixes[None])


def naive_completion(label: str, original_answer: str, language: str) -> str:
    """No LLM: a label-specific prefix in front of the original answer."""
    return naive_prefix(label, language) + original_answer


# Rule 7 ---------------------------------------------------------------------------------------
SAMPLE_ID_SEPARATOR = "_"


def sample_id(request_id: str, label: str) -> str:
    return f"{request_id}{SAMPLE_ID_SEPARATOR}{label}"


# Rule 8 ---------------------------------------------------------------------------------------
def sample_weight(
    confidence_value: float,
    baseline: float = 0.7,
    below_baseline: float = 0.5,
    slope: float = 4.0,
    max_weight: float = 5.0,
) -> float:
    if confidence_value < baseline:
        return below_baseline
    return min(max_weight, 1.0 + slope * (confidence_value - baseline))


# Rule 9 ---------------------------------------------------------------------------------------
def label_weights(
    label_counts: Mapping[str, int],
    rarity_factor: float = 0.6,
    base_weights: Mapping[str, float] | None = None,
    default_base: float = 1.0,
) -> dict[str, float]:
    """base(label) + rarity_factor x total / count, for every label with a count above 0."""
    if base_weights is None:
        base_weights = RuleSettings().label_base_weights
    total = sum(label_counts.values())
    return {
        label: base_weights.get(label, default_base) + rarity_factor * total / count
        for label, count in sorted(label_counts.items())
        if count > 0
    }
