"""The A/B comparison of models on the RAG metrics, free of I/O
(docs/spec.md, "Rule 11: Training trigger", "Rule 17: Judged as served").

A judge labels each answer with the RAG evaluator's labels; per model this gives each label's
rate with a 95% Wilson interval, latency (mean, p50, p90), tokens per answer and the judge's
cost. The gate (docs/model-gate.md, "The model gate") decides on the questions judged for both models: the
primary metric by an exact McNemar test on the discordant pairs (the questions one model got
right and the other wrong), the other labels by non-inferiority (the upper bound of the paired
bootstrap interval of their change under a margin). It refuses when too few questions were
judged for both, and promotes automatically only when an audit set shows the judge agrees with
human labels (Cohen's kappa per label, on enough audited examples of each label).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import orjson

from rag_sft.core import rules
from rag_sft.core.llm import latency_percentiles
from rag_sft.core.promotion import Decision

JUDGED_LABELS = tuple(rules.LABEL_PRIORITY)  # factuality_error, incomplete_answer, low_relevance, overconfidence
Z_95 = 1.959963984540054

JUDGE_RUBRIC = (
    "You are the quality evaluator of a retrieval-augmented question answering service. Judge the "
    "ANSWER to the QUESTION using only the DOCUMENTS (and the REFERENCE answer when one is given). "
    "Labels, any number of them:\n"
    "- factuality_error: the answer states something the documents contradict or do not support;\n"
    "- incomplete_answer: the answer misses key points the documents hold;\n"
    "- low_relevance: the answer strays from the question or brings in unrelated content;\n"
    "- overconfidence: absolute or certain wording (certainly, must, definitely) the documents do not warrant.\n"
    'Reply with one JSON object and nothing else: {"labels": [...], "score": <0..1, the answer\'s overall quality>}.'
)
_FENCE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.DOTALL)


@dataclass(frozen=True)
class Verdict:
    labels: frozenset[str]
    score: float


def judge_messages(
    question: str, docs: Sequence[str], answer: str, reference: str | None = None, rubric: str = JUDGE_RUBRIC
) -> list[dict[str, str]]:
    parts = ["DOCUMENTS:", *(f"[{n}] {doc}" for n, doc in enumerate(docs, 1)), f"QUESTION:\n{question}"]
    if reference:
        parts.append(f"REFERENCE:\n{reference}")
    parts.append(f"ANSWER:\n{answer}")
    return [{"role": "system", "content": rubric}, {"role": "user", "content": "\n\n".join(parts)}]


_DOC_START = re.compile(r"(?:^|\n\n)\[(?:文档|Document )\d+\] ")
_INSTRUCTIONS = {text for texts in rules.INSTRUCTIONS.values() for text in texts.values()}


def prompt_documents(prompt: str) -> list[str]:
    """The numbered documents of a rule-5 prompt: what the RAG service retrieved, for the judge."""
    starts = list(_DOC_START.finditer(prompt))
    if not starts:
        return []
    ends = [i for text in _INSTRUCTIONS if (i := prompt.find(rules.PROMPT_SEPARATOR + text, starts[-1].end())) >= 0]
    end = min(ends, default=len(prompt))
    bounds = [m.end() for m in starts]
    return [prompt[b : (starts[n + 1].start() if n + 1 < len(starts) else end)] for n, b in enumerate(bounds)]


def parse_verdict(text: str) -> Verdict | None:
    """The verdict when `text` is a JSON object with `labels` (known labels only) and `score`
    in [0, 1]; None otherwise (never guessed). A ```json fence around it is accepted."""
    fenced = _FENCE.match(text.strip())
    try:
        value = orjson.loads(fenced[1] if fenced else text)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(value, dict):
        return None
    labels, score = value.get("labels"), value.get("score")
    if not isinstance(labels, list) or not all(isinstance(label, str) and label in JUDGED_LABELS for label in labels):
        return None
    if isinstance(score, bool) or not isinstance(score, int | float) or not 0 <= score <= 1:
        return None
    return Verdict(frozenset(labels), float(score))


def wilson_interval(hits: int, n: int, z: float = Z_95) -> tuple[float, float]:
    """The Wilson score interval of a proportion: sound at 0 and 1 and for small n."""
    if n == 0:
        return (math.nan, math.nan)
    p = hits / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(centre - half, 0.0), min(centre + half, 1.0))


@dataclass(frozen=True)
class Difference:
    """Candidate minus the model in use, on the questions both were judged on."""

    value: float
    low: float
    high: float
    pairs: int


def paired_difference(
    candidate: Sequence[bool], baseline: Sequence[bool], resamples: int = 2000, seed: int = 0
) -> Difference:
    """The rate difference with a 95% paired bootstrap interval: questions are resampled, each
    keeping both of its answers, so the per-question pairing is not thrown away."""
    a = np.asarray(candidate, dtype=float)
    b = np.asarray(baseline, dtype=float)
    if len(a) == 0:
        return Difference(math.nan, math.nan, math.nan, 0)
    per_question = a - b
    rows = np.random.default_rng(seed).integers(0, len(a), size=(resamples, len(a)))
    means = per_question[rows].mean(axis=1)
    low, high = np.quantile(means, [0.025, 0.975])
    return Difference(float(per_question.mean()), float(low), float(high), len(a))


@dataclass
class ModelRun:
    """What one model did on the eval questions: its answers' verdicts (None: the judge failed),
    latencies, generated tokens, and what judging them cost."""

    name: str
    verdicts: list[Verdict | None]
    latencies_s: list[float]
    tokens: list[int]
    judge_prompt_tokens: int = 0
    judge_completion_tokens: int = 0
    judge_failures: dict[str, int] = field(default_factory=dict)

    def flags(self, label: str) -> list[bool | None]:
        return [None if v is None else label in v.labels for v in self.verdicts]


@dataclass(frozen=True)
class JudgePrice:
    """US$ per million tokens; 0 when the endpoint is free or the price unknown."""

    prompt: float = 0.0
    completion: float = 0.0

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (prompt_tokens * self.prompt + completion_tokens * self.completion) / 1e6


def summarize(run: ModelRun, price: JudgePrice = JudgePrice()) -> dict:
    """One model's column of the A/B table."""
    judged = [v for v in run.verdicts if v is not None]
    row: dict = {"model": run.name, "answers": len(run.verdicts), "judged": len(judged)}
    for label in JUDGED_LABELS:
        hits = sum(label in v.labels for v in judged)
        low, high = wilson_interval(hits, len(judged))
        row[label] = {"rate": _r(hits / len(judged)) if judged else None, "low": _r(low), "high": _r(high)}
    row["score_mean"] = _r(float(np.mean([v.score for v in judged]))) if judged else None
    row["latency_s"] = {
        "mean": _r(float(np.mean(run.latencies_s))) if run.latencies_s else None,
        **{k: v for k, v in latency_percentiles(run.latencies_s).items() if k in ("p50", "p90")},
    }
    row["tokens_per_answer"] = _r(float(np.mean(run.tokens))) if run.tokens else None
    row["judge_tokens"] = run.judge_prompt_tokens + run.judge_completion_tokens
    row["judge_cost_usd"] = _r(price.cost(run.judge_prompt_tokens, run.judge_completion_tokens), 6)
    row["judge_failures"] = dict(sorted(run.judge_failures.items()))
    return row


def compare(candidate: ModelRun, in_use: ModelRun, resamples: int = 2000, seed: int = 0) -> dict[str, Difference]:
    """Candidate minus the model in use for every label, over the questions judged for both."""
    differences = {}
    for label in JUDGED_LABELS:
        pairs = [(a, b) for a, b in zip(candidate.flags(label), in_use.flags(label)) if a is not None and b is not None]
        differences[label] = paired_difference([a for a, _ in pairs], [b for _, b in pairs], resamples, seed)
    return differences


def exact_mcnemar_p(fixed: int, broken: int) -> float:
    """The two-sided exact McNemar test: under "no difference" each discordant question is as
    likely fixed as broken, so `fixed` is Binomial(fixed + broken, 1/2); the p-value doubles the
    smaller tail (the distribution is symmetric). No discordant question: p = 1."""
    n = fixed + broken
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(fixed, broken) + 1)) / 2**n
    return min(1.0, 2 * tail)


@dataclass(frozen=True)
class PairedTest:
    """One label on the questions judged for both models. `fixed`: the model in use's answer had
    the label and the candidate's not; `broken`: the reverse. The concordant questions say
    nothing about which model is better, so the exact test reads the discordant ones only."""

    label: str
    questions: int  # asked of both models
    pairs: int  # judged for both
    fixed: int
    broken: int
    p_value: float

    @property
    def coverage(self) -> float:
        return self.pairs / self.questions if self.questions else 0.0

    def summary(self) -> dict:
        return {
            "label": self.label, "questions": self.questions, "judged_pairs": self.pairs, "judged_coverage": _r(self.coverage),
            "fixed": self.fixed, "broken": self.broken, "p_value": _r(self.p_value, 6),
        }  # fmt: skip


def paired_test(candidate: ModelRun, in_use: ModelRun, label: str) -> PairedTest:
    """The exact McNemar test of `label` between the candidate and the model in use."""
    return paired_flags_test(label, candidate.flags(label), in_use.flags(label))


def paired_flags_test(name: str, candidate: Sequence[bool | None], in_use: Sequence[bool | None]) -> PairedTest:
    """The exact McNemar test on per-question failures (True: failed; None: not judged)."""
    pairs = [(a, b) for a, b in zip(candidate, in_use) if a is not None and b is not None]
    fixed = sum(1 for a, b in pairs if b and not a)
    broken = sum(1 for a, b in pairs if a and not b)
    return PairedTest(name, len(candidate), len(pairs), fixed, broken, exact_mcnemar_p(fixed, broken))


@dataclass(frozen=True)
class LabelAgreement:
    """The judge against the audit set's human labels on one label: kappa, over `items` audited
    answers of which `positives` a human gave that label."""

    kappa: float
    positives: int
    items: int


@dataclass(frozen=True)
class GateSettings:
    primary_metric: str = rules.FACTUALITY_ERROR
    alpha: float = 0.05  # the exact test's two-sided significance level
    min_judged_pairs: int = 30  # questions judged for both models, at least
    min_judged_coverage: float = 0.9  # share of the questions judged for both models, at least
    non_inferiority_margin: float = 0.05  # another label's rate may rise by less than this (upper bound of its 95% interval)
    min_kappa: float = 0.6  # the judge's agreement with the audit set, per label
    min_audit_per_label: int = 10  # audited answers a human gave each label, before its kappa counts


def judged_gate(
    test: PairedTest,
    differences: Mapping[str, Difference],
    in_use: str,
    settings: GateSettings,
    audit: Mapping[str, LabelAgreement] | None = None,
    replay: PairedTest | None = None,
) -> Decision:
    """Reject unless enough questions were judged for both models, the exact test finds the
    candidate better on the primary metric at `alpha`, every other label is non-inferior, and
    (with a replay set) the same test finds it fixes more of the replayed failures than the
    model in use. Then promote when the audit set shows the judge can be trusted on every label; otherwise
    the candidate waits for a person's review (the numbers are sound, the judge is unproven)."""
    if test.pairs == 0:
        return Decision(False, f"no question was judged for both the candidate and {in_use}")
    coverage = f"{test.pairs} of {test.questions} questions judged for both models ({test.coverage:.0%})"
    if test.pairs < settings.min_judged_pairs:
        return Decision(False, f"too few judged questions: {coverage}, under the minimum of {settings.min_judged_pairs}")
    if test.coverage < settings.min_judged_coverage:
        return Decision(False, f"judged coverage too low: {coverage}, under the floor of {settings.min_judged_coverage:.0%}")
    stated = (
        f"{test.label}: {test.fixed} fixed, {test.broken} broken vs {in_use} on {test.pairs} questions, "
        f"exact McNemar p = {test.p_value:.4g}"
    )
    if test.broken > test.fixed and test.p_value < settings.alpha:
        return Decision(False, f"worse than the model in use: {stated}")
    if not (test.fixed > test.broken and test.p_value < settings.alpha):
        return Decision(False, f"no significant improvement: {stated}, not under alpha {settings.alpha}")
    inferior = {
        label: d
        for label, d in differences.items()
        if label != test.label and d.pairs and not d.high < settings.non_inferiority_margin
    }
    if inferior:
        listed = ", ".join(f"{label} rate {_signed(d.value)} (95% CI upper bound {_signed(d.high)})" for label, d in sorted(inferior.items()))
        return Decision(False, f"{stated}, but {listed} vs {in_use}: not under the margin {settings.non_inferiority_margin}")
    passed = f"better than the model in use: {stated}; every other label under the margin {settings.non_inferiority_margin}"
    if replay is not None:
        replayed = f"replay set: {replay.fixed} fixed, {replay.broken} broken vs {in_use} on {replay.pairs} of {replay.questions} failures"
        if not (replay.fixed > replay.broken and replay.p_value < settings.alpha):
            return Decision(
                False,
                f"{stated}, but it does not fix the failures it was trained for: {replayed}, "
                f"exact McNemar p = {replay.p_value:.4g}, not under alpha {settings.alpha}",
            )
        passed += f"; {replayed}, exact McNemar p = {replay.p_value:.4g}"
    distrust = judge_distrust(audit, settings)
    if distrust:
        return Decision(False, f"{passed}; but {distrust}: left a candidate for review", review=True)
    return Decision(True, passed)


def judge_distrust(audit: Mapping[str, LabelAgreement] | None, settings: GateSettings) -> str:
    """Why the judge's verdicts may not promote by themselves ("" when they may): no audit set,
    a label with too few audited examples (its kappa says nothing), or a kappa under the minimum."""
    if audit is None:
        return "the judge has no audit set (human labels to measure its agreement on)"
    reasons = []
    for label in JUDGED_LABELS:
        agreement = audit.get(label)
        if agreement is None or agreement.positives < settings.min_audit_per_label:
            reasons.append(f"{label}: {agreement.positives if agreement else 0} audited examples, under {settings.min_audit_per_label}")
        elif not agreement.kappa >= settings.min_kappa:
            reasons.append(f"{label}: kappa {agreement.kappa:.2f}")
    if not reasons:
        return ""
    return f"the judge is not trusted (Cohen's kappa with the audit set, minimum {settings.min_kappa}): {'; '.join(reasons)}"


def judge_warnings(judge_model: str, eval_rows: Sequence[Mapping]) -> list[str]:
    """What weakens the judge's verdicts: grading with the model that wrote the corrected answers
    (the references) favours answers that sound like its own."""
    writers = {row.get("completion_model") for row in eval_rows if row.get("completion_strategy") == "llm"}
    if judge_model in writers:
        return [f"the judge model {judge_model} also wrote the corrected answers (the references): it may favour its own style"]
    return []


def cohen_kappa(rater_a: Sequence[bool], rater_b: Sequence[bool]) -> float:
    """Cohen's kappa of two binary raters. When chance agreement is certain (both always say
    the same class, e.g. a label no audited answer has), it is undefined (NaN): agreeing on
    nothing but "absent" says nothing about how the judge spots the label."""
    a = np.asarray(rater_a, dtype=bool)
    b = np.asarray(rater_b, dtype=bool)
    if len(a) == 0:
        return math.nan
    observed = float(np.mean(a == b))
    expected = float(a.mean() * b.mean() + (1 - a.mean()) * (1 - b.mean()))
    if expected >= 1.0:
        return math.nan
    return (observed - expected) / (1 - expected)


def audit_kappa(human: Sequence[frozenset[str]], judge: Sequence[Verdict | None]) -> dict[str, LabelAgreement]:
    """Kappa per label between the audit set's human labels and the judge's verdicts, with the
    number of audited answers a human gave the label (items the judge failed on are left out)."""
    pairs = [(h, v.labels) for h, v in zip(human, judge) if v is not None]
    return {
        label: LabelAgreement(
            _r(cohen_kappa([label in h for h, _ in pairs], [label in j for _, j in pairs])),
            sum(label in h for h, _ in pairs),
            len(pairs),
        )
        for label in JUDGED_LABELS
    }


def fixed_rate(still_failing: Sequence[bool | None]) -> tuple[float, float, float] | None:
    """The share of replayed failures a model fixed, with its 95% Wilson interval (None: none judged)."""
    judged = [flag for flag in still_failing if flag is not None]
    if not judged:
        return None
    fixed = sum(1 for flag in judged if not flag)
    return (_r(fixed / len(judged)), *(_r(bound) for bound in wilson_interval(fixed, len(judged))))


def table_rows(
    summaries: Sequence[dict],
    differences: Mapping[str, Difference],
    test: PairedTest | None = None,
    replay: tuple[PairedTest, Mapping[str, tuple[float, float, float] | None]] | None = None,
) -> list[dict]:
    """The A/B table of the source articles: one row per metric, one column per model, then the
    candidate minus the model in use with its interval; with the gate's exact test, its counts,
    p-value and judged coverage."""
    rows = []
    for label in JUDGED_LABELS:
        row = {"metric": f"{label} rate"}
        for summary in summaries:
            cell = summary[label]
            row[summary["model"]] = None if cell["rate"] is None else f"{cell['rate']:.3f} [{cell['low']:.3f}, {cell['high']:.3f}]"
        d = differences.get(label)
        row["change"] = None if d is None or not d.pairs else f"{_signed(d.value)} [{_signed(d.low)}, {_signed(d.high)}]"
        rows.append(row)
    if replay is not None:
        test_row, rates = replay
        row = {"metric": "replay failures fixed"}
        for summary in summaries:
            rate = rates.get(summary["model"])
            row[summary["model"]] = None if rate is None else f"{rate[0]:.3f} [{rate[1]:.3f}, {rate[2]:.3f}]"
        row["change"] = f"{test_row.fixed} fixed, {test_row.broken} broken, p = {test_row.p_value:.4g}"
        rows.append(row)
    if test is not None:
        blank = {s["model"]: None for s in summaries}
        rows.append({"metric": f"{test.label} exact McNemar", **blank, "change": f"{test.fixed} fixed, {test.broken} broken, p = {test.p_value:.4g}"})
        rows.append({"metric": "judged for both", **blank, "change": f"{test.pairs}/{test.questions} ({test.coverage:.0%})"})
    for metric, read in (
        ("latency mean s", lambda s: s["latency_s"]["mean"]),
        ("latency p50 s", lambda s: s["latency_s"]["p50"]),
        ("latency p90 s", lambda s: s["latency_s"]["p90"]),
        ("tokens per answer", lambda s: s["tokens_per_answer"]),
        ("judge cost usd", lambda s: s["judge_cost_usd"]),
    ):
        row = {"metric": metric, **{s["model"]: None if read(s) is None else f"{read(s):g}" for s in summaries}}
        first, second = read(summaries[0]), read(summaries[1]) if len(summaries) > 1 else None
        row["change"] = f"{first - second:+g}" if first is not None and second is not None else None
        rows.append(row)
    return rows


def format_table(rows: Sequence[dict]) -> str:
    """The table as aligned text (what `make run` prints)."""
    columns = list(rows[0])
    cells = [[str(row.get(c) if row.get(c) is not None else "-") for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths)) for r in cells]
    return "\n".join(lines)


def _signed(value: float) -> str:
    return f"{value:+.3f}"


def _r(value: float, digits: int = 4) -> float:
    return value if math.isnan(value) else round(value, digits)
