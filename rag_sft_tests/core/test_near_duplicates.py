"""One sample per question (docs/spec.md, "Rule 13: One sample per question"): near-identical questions are grouped,
whatever documents answered them, one kept by a choice that does not depend on row order; a sample close to one kept on
an earlier day repeats it."""

import random
from itertools import combinations

import numpy as np
import pyarrow as pa
import pytest

from rag_sft.core import near_duplicates as nd
from rag_sft.core import rules

BANDING = nd.Banding.for_threshold(nd.DEFAULT_THRESHOLD)


def signatures(questions: list[str]):
    """As sft_records signs questions: by their normalized keys."""
    return nd.signatures(nd.question_keys(pa.array(questions)).to_pylist())


def grams(text: str) -> set[str]:
    padded = text + "\0" * (nd.NGRAM - 1)
    return {padded[i : i + nd.NGRAM] for i in range(len(text))}


def jaccard(left: str, right: str) -> float:
    a, b = grams(left), grams(right)
    return len(a & b) / len(a | b)


VARIANTS = [  # the same question, as users retype it
    "Spring Boot 的 application.yml 怎么配置数据源连接池?",
    "Spring Boot 的 application.yml 怎么配置数据源连接池？",
    "Spring Boot 的 application.yml 怎么配置数据源连接池",
    "Spring Boot 的 application.yml 怎么配置数据源的连接池?",
    "spring boot 的 application.yml 怎么配置数据源连接池?",
]
OTHERS = [
    "Spring Boot 的 application.yml 怎么配置日志级别?",
    "Kubernetes Deployment 如何回滚到上一个版本?",
    "How do I roll back a Deployment in Kubernetes?",
    "退款需要多长时间才能到账?",
]


def test_the_signature_estimates_the_jaccard_similarity_of_the_question_grams():
    pairs = [(a, b) for a, b in combinations(VARIANTS + OTHERS, 2)]
    questions = [q for pair in pairs for q in pair]
    signature = nd.signatures(questions)
    errors = [
        nd.similarity(signature[2 * i], signature[2 * i + 1]) - jaccard(a, b) for i, (a, b) in enumerate(pairs)
    ]
    # 64 permutations: standard error at most 0.0625; allow four of them.
    assert max(abs(e) for e in errors) < 0.25 and abs(np.mean(errors)) < 0.05
    again = nd.signatures(questions)
    assert (again == signature).all()


def test_retyped_questions_are_one_group_and_others_stay_apart():
    questions = VARIANTS + OTHERS
    ids = [f"req-{n}_factuality_error" for n in range(len(questions))]
    found = nd.deduplicate_day(ids, signatures(questions), lambda keys: nd.EarlierSamples.none(), BANDING, 0.8)
    aside = dict(zip(found.set_aside.column("sample_id").to_pylist(), found.set_aside.column("duplicate_of").to_pylist()))
    kept_variant = min(ids[: len(VARIANTS)], key=nd.selection_rank)
    assert aside == {sample_id: kept_variant for sample_id in ids[: len(VARIANTS)] if sample_id != kept_variant}
    assert set(found.set_aside.column("filter_reason").to_pylist()) == {rules.NEAR_DUPLICATE}
    assert (found.within_day, found.across_days) == (len(VARIANTS) - 1, 0)


def test_the_kept_sample_does_not_depend_on_row_order():
    questions = VARIANTS * 4
    ids = [f"req-{n}_low_relevance" for n in range(len(questions))]
    orders = [list(range(len(ids))), list(reversed(range(len(ids)))), random.Random(5).sample(range(len(ids)), len(ids))]
    results = []
    for order in orders:
        signature = signatures([questions[i] for i in order])
        found = nd.deduplicate_day([ids[i] for i in order], signature, lambda keys: nd.EarlierSamples.none(), BANDING, 0.8)
        results.append(dict(zip(found.set_aside.column("sample_id").to_pylist(), found.set_aside.column("duplicate_of").to_pylist())))
    assert results[0] == results[1] == results[2] and len(results[0]) == len(ids) - 1


def test_a_sample_close_to_one_kept_on_an_earlier_day_repeats_it_the_earliest_first():
    earlier = signatures([VARIANTS[0], VARIANTS[1]])
    keys = nd.band_keys(earlier, BANDING)
    # What the cross-day index holds: two earlier days kept one variant each (one row per band key).
    index = nd.EarlierSamples(keys.ravel(), np.repeat([0, 1], BANDING.bands), ["2026-11-18", "2026-11-17"], ["old_x", "older_x"], earlier)
    today = signatures([VARIANTS[2], OTHERS[1]])
    found = nd.deduplicate_day(["new_x", "other_x"], today, lambda wanted: index, BANDING, 0.8)
    assert found.set_aside.to_pylist() == [{"sample_id": "new_x", "filter_reason": rules.NEAR_DUPLICATE, "duplicate_of": "older_x"}]
    assert (found.within_day, found.across_days) == (0, 1) and [found.sample_ids[i] for i in found.kept] == ["other_x"]


@pytest.mark.parametrize("threshold", [0.5, 0.8, 0.95])
def test_the_banding_follows_the_configured_similarity(threshold):
    banding = nd.Banding.for_threshold(threshold)
    assert banding.bands * banding.rows <= nd.NUM_PERM
    # The S-curve's midpoint (1/b)^(1/r) sits near the threshold.
    assert abs((1 / banding.bands) ** (1 / banding.rows) - threshold) < 0.15


@pytest.mark.parametrize("threshold", [0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95])
@pytest.mark.parametrize("num_perm", [64, 128])
def test_the_banding_is_the_one_datasketch_chooses(threshold, num_perm):
    from datasketch import MinHashLSH

    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    assert nd.Banding.for_threshold(threshold, num_perm) == nd.Banding(lsh.b, lsh.r)


def test_questions_that_normalize_to_nothing_still_have_a_signature_of_their_own():
    assert nd.normalized(pa.array(["？？？", "!!"])).to_pylist() == ["", ""]
    questions = nd.question_keys(pa.array(["？？？", "!!", "退款?", "???"])).to_pylist()
    assert questions == ["？？？", "!!", "退款", "???"]
    signature = nd.signatures(questions)
    assert signature.shape == (4, nd.NUM_PERM)
    assert nd.similarity(signature[0], signature[1]) < 0.8 and nd.similarity(signature[0], signature[2]) < 0.8


def test_differing_suggestions_are_judged_as_a_reader_would_and_only_within_the_day():
    set_aside = pa.table({
        "sample_id": ["b", "c", "d"],
        "filter_reason": [rules.NEAR_DUPLICATE] * 3,
        "duplicate_of": ["a", "a", "earlier_day_sample"],
    })
    suggestions = {"a": "退款须在签收后七天内申请。", "b": "退款须在签收后七天内申请", "c": "不支持退款。", "d": "随便"}
    # b says what a says (a full stop apart); c contradicts it; d's kept sample is of an earlier day.
    assert nd.differing_suggestions(set_aside, suggestions) == [("a", "c")]
