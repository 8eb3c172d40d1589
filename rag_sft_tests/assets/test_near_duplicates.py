"""Near-duplicates through Dagster: the same question asked again, that day or on a later one
(a request re-emitted included), is trained on once whatever documents answered it; the others
name the sample kept. Different questions are never merged for sharing their documents."""

import itertools
import random
import uuid

import pandas as pd

from rag_sft.erasure_job import ERASE_OP, erase_requests_job
from rag_sft_tests.helpers import event, hold_back_days, write_lines

DAY1, DAY2 = "2026-11-18", "2026-11-19"
TOPICS = ["退款", "发票", "会员积分", "实名认证", "收货地址", "优惠券", "提现", "订单取消", "物流查询", "账号注销"]
LATER_TOPICS = ["开发票抬头", "修改手机号", "延长保修", "企业采购", "海外配送"]


def distinct_events(day: str, prefix: str, topics=TOPICS) -> list[dict]:
    """Different questions, each answered from its own documents, all factuality errors."""
    return [
        event(f"{prefix}{n}", f"{day}T0{n % 10}:00:00Z", question=f"{topic}的具体规则是什么?", score=0.9,
              docs=[{"id": f"kb-{topic}-{d}", "content": f"{topic}规则第{d}条。", "score": 0.9 - d / 10} for d in range(3)])
        for n, topic in enumerate(topics)
    ]


def test_a_question_retyped_that_day_or_on_a_later_day_or_a_request_re_emitted_is_exported_once(pipeline):
    first = distinct_events(DAY1, "a")
    retyped = {**first[0], "request_id": "a-retyped", "question": "退款的具体规则是什么？"}  # same docs, another mark
    write_lines(pipeline.landing / "day1.jsonl", [*first, retyped])
    second = distinct_events(DAY2, "b", LATER_TOPICS)  # new questions
    asked_again = {**first[2], "request_id": "b-again", "timestamp": f"{DAY2}T08:00:00Z", "question": "会员积分的具体规则是什么"}
    re_emitted = {**first[1], "timestamp": f"{DAY2}T09:00:00Z"}  # request a1 shipped again the next day
    write_lines(pipeline.landing / "day2.jsonl", [*second, asked_again, re_emitted])

    day1 = pipeline.materialize(DAY1)
    assert pipeline.metadata(day1, "sft_records")["near_duplicates"] == {
        "within_day": 1, "across_days": 0, "kept": 10, "differing_suggestions": 0, "differing_suggestions_examples": []
    }
    day2 = pipeline.materialize(DAY2)
    assert pipeline.metadata(day2, "sft_records")["near_duplicates"] == {
        "within_day": 0, "across_days": 1, "kept": 5, "differing_suggestions": 0, "differing_suggestions_examples": []
    }
    assert pipeline.metadata(day2, "raw_events")["duplicates"] == 1

    rows = pd.read_parquet(pipeline.data / "warehouse" / "sft_records").set_index("request_id")
    kept_a0 = rows.loc[["a0", "a-retyped"]].query("status == 'exported'")
    assert len(kept_a0) == 1  # one of the two, by a hash of sample_id
    repeated = rows.loc[["a0", "a-retyped"]].query("status == 'filtered'").iloc[0]
    assert (repeated.filter_reason, repeated.duplicate_of) == ("near_duplicate", kept_a0.iloc[0].sample_id)
    again = rows.loc["b-again"]
    assert (again.status, again.filter_reason, again.duplicate_of) == ("filtered", "near_duplicate", "a2_factuality_error")
    # The re-emitted request is a duplicate of its first day, in the dead letter.
    dead = pd.read_parquet(pipeline.data / "warehouse" / "rejected_events")
    assert dead[["request_id", "outcome", "detail"]].to_dict("records") == [
        {"request_id": "a1", "outcome": "duplicate", "detail": f"request_id 'a1' first seen on {DAY1}"}
    ]
    assert len(rows.loc[["a1"]]) == 1
    exported = [line for day in (DAY1, DAY2) for line in pipeline.jsonl(day).read_text().splitlines()]
    assert len(exported) == 15  # 10 + 5: every question once

    # Re-running a day gives the same records: it does not meet its own earlier signatures or ids.
    for day in (DAY2, DAY1):
        before = pipeline.jsonl(day).read_bytes()
        pipeline.materialize(day)
        assert pipeline.jsonl(day).read_bytes() == before


def test_a_group_whose_members_disagree_on_the_correct_answer_is_reported(pipeline):
    first = distinct_events(DAY1, "a")
    same_fix = {**first[0], "request_id": "a-retyped", "question": "退款的具体规则是什么？"}
    other_fix = {**first[0], "request_id": "a-again", "question": "退款的 具体规则是什么",
                 "evaluation": {**first[0]["evaluation"], "suggestion": "退款须在签收后七天内申请。"}}
    write_lines(pipeline.landing / "day1.jsonl", [*first, same_fix, other_fix])

    day1 = pipeline.materialize(DAY1)

    rows = pd.read_parquet(pipeline.data / "warehouse" / "sft_records").set_index("request_id")
    kept = rows.loc[["a0", "a-retyped", "a-again"]].query("status == 'exported'")
    assert len(kept) == 1  # one answer is trained on
    # The member whose suggestion differs from the kept one's is named; the one that agrees is not.
    disagreeing = [request for request in ("a0", "a-retyped", "a-again")
                   if rows.loc[request].status == "filtered" and (request == "a-again") != (kept.index[0] == "a-again")]
    figures = pipeline.metadata(day1, "sft_records")
    assert figures["near_duplicate_differing_suggestions"] == len(disagreeing) >= 1
    pairs = figures["near_duplicates"]["differing_suggestions_examples"]
    assert {tuple(pair) for pair in pairs} == {(kept.iloc[0].sample_id, rows.loc[r].sample_id) for r in disagreeing}


def test_a_request_is_a_duplicate_of_the_day_that_exported_it_not_of_a_held_back_day(pipeline, monkeypatch):
    first = distinct_events(DAY1, "a")
    write_lines(pipeline.landing / "day1.jsonl", first)
    re_emitted = {**first[1], "timestamp": f"{DAY2}T09:00:00Z"}  # request a1 shipped again the next day
    write_lines(pipeline.landing / "day2.jsonl", [*distinct_events(DAY2, "b", LATER_TOPICS), re_emitted])

    with monkeypatch.context() as patched:  # day 1 fails a check at ERROR: held back
        hold_back_days(patched)
        held = pipeline.materialize(DAY1, raise_on_error=False)
    assert pipeline.instance.get_run_by_id(held.run_id).tags["rag_sft/held_back"] == "confidence"
    day2 = pipeline.materialize(DAY2)
    # Day 1 exported nothing: the request's copy on day 2 is the one trained on.
    assert pipeline.metadata(day2, "raw_events")["duplicates"] == 0
    assert "a1" in pd.read_json(pipeline.jsonl(DAY2), lines=True)["request_id"].tolist()

    pipeline.materialize(DAY1)  # released: day 1 exports a1 now
    assert "a1" in pd.read_json(pipeline.jsonl(DAY1), lines=True)["request_id"].tolist()
    day2 = pipeline.materialize(DAY2)  # and day 2, run again, ships it no more
    assert pipeline.metadata(day2, "raw_events")["duplicates"] == 1
    assert "a1" not in pd.read_json(pipeline.jsonl(DAY2), lines=True)["request_id"].tolist()


def test_after_an_erasure_a_question_like_an_erased_one_is_exported_and_a_late_copy_is_erased(pipeline):
    first = distinct_events(DAY1, "a")
    write_lines(pipeline.landing / "day1.jsonl", first)
    asked_again = {**first[2], "request_id": "b-again", "timestamp": f"{DAY2}T08:00:00Z", "question": "会员积分的具体规则是什么"}
    late_copy = {**first[1], "timestamp": f"{DAY2}T09:00:00Z"}  # request a1 shipped again the next day
    write_lines(pipeline.landing / "day2.jsonl", [asked_again, late_copy])
    pipeline.materialize(DAY1)
    erased = erase_requests_job.execute_in_process(
        run_config={"ops": {ERASE_OP: {"config": {"request_ids": ["a1", "a2"]}}}},
        resources=pipeline.resources(),
        instance=pipeline.instance,
    )
    # Each had a row in the request index and a kept sample in the near-duplicate index.
    assert erased.output_for_node(ERASE_OP)["index_rows_removed"] == 4

    day2 = pipeline.materialize(DAY2)
    # Not set aside for a2's sample, which no longer exists; a1's copy is erased, not a duplicate.
    assert pipeline.metadata(day2, "sft_records")["near_duplicates"]["across_days"] == 0
    assert pd.read_parquet(pipeline.data / "warehouse" / "sft_records").set_index("request_id").loc["b-again"].status == "exported"
    raw = pipeline.metadata(day2, "raw_events")
    assert (raw["duplicates"], raw["erased"]) == (0, 1)


def test_two_short_questions_over_the_same_documents_are_both_exported(pipeline):
    """Document ids are no part of the comparison: three shared UUID ids made these 0.91 alike."""
    ids = [str(uuid.UUID(int=random.Random(n).getrandbits(128), version=4)) for n in range(3)]  # as a knowledge base names them
    docs = [{"id": doc_id, "content": f"客服文档第{n}段。", "score": 0.9 - n / 10} for n, doc_id in enumerate(ids)]
    questions = ["退款多久到账", "发票怎么开具"]
    write_lines(pipeline.landing / "day1.jsonl", [
        event(f"q{n}", f"{DAY1}T08:00:00Z", question=question, score=0.9, docs=docs) for n, question in enumerate(questions)
    ])  # fmt: skip
    records = pipeline.metadata(pipeline.materialize(DAY1), "sft_records")
    assert records["near_duplicates"]["within_day"] == 0
    assert len(pipeline.jsonl(DAY1).read_text().splitlines()) == 2


VERBS = ["reset", "change", "export", "delete", "lock", "share", "clone", "archive", "verify", "transfer"]
OBJECTS = ["password", "invoice", "API key", "billing address", "team members", "audit log", "webhook secret",
           "storage bucket", "SSO settings", "payment card", "phone number", "backup schedule", "DNS records",
           "TLS certificate", "usage report"]  # fmt: skip
LABELS = ["factuality_error", "incomplete_answer", "low_relevance", "overconfidence"]  # a day the checks pass
RETYPED = [  # as users retype a question: the first time, in other case with full-width marks, spaced otherwise
    lambda question: question,
    lambda question: question.lower().replace("?", "？"),
    lambda question: question.replace(" ", "  ").replace("?", " ?"),
]


def test_a_question_retyped_on_later_days_with_its_own_documents_is_trained_on_once(pipeline):
    """docs/spec.md, "Rule 13: One sample per question": 150 questions, each retyped on three days and answered from
    other documents each time; the first day exports them, the later days set each aside naming it."""
    questions = [f"How do I {verb} the {thing}?" for verb, thing in itertools.product(VERBS, OBJECTS)]
    days = ["2026-11-17", DAY1, DAY2]
    for day, retype in zip(days, RETYPED):
        write_lines(pipeline.landing / f"{day}.jsonl", [
            event(f"{day}-{n}", f"{day}T08:00:00Z", question=retype(question), score=0.9, labels=[LABELS[n % 4]],
                  docs=[{"id": f"kb-{day}-{n}-{d}", "content": f"Step {d} for {question}", "score": 0.9} for d in range(3)])
            for n, question in enumerate(questions)
        ])  # fmt: skip
    counts = [pipeline.metadata(pipeline.materialize(day), "sft_records")["near_duplicates"] for day in days]
    assert [(c["within_day"], c["across_days"], c["kept"]) for c in counts] == [(0, 0, 150), (0, 150, 0), (0, 150, 0)]
    rows = pd.read_parquet(pipeline.data / "warehouse" / "sft_records").set_index("request_id")
    for day in days[1:]:
        for n in range(len(questions)):
            row = rows.loc[f"{day}-{n}"]
            kept = f"2026-11-17-{n}_{LABELS[n % 4]}"
            assert (row.status, row.filter_reason, row.duplicate_of) == ("filtered", "near_duplicate", kept)
    assert len(pipeline.jsonl("2026-11-17").read_text().splitlines()) == 150
