"""A version's training set (docs/spec.md, "Rule 12: Balance", "Rule 17: Judged as served"): train and eval split by
question group, eval stratified by day and label, the train split's dominant labels capped by a hash of sample_id, and
its two blocking checks (train_label_balance, eval_leakage)."""

import random

from rag_sft.core import balance, checks, training_data
from rag_sft.core.training_data import WindowRecord

DAYS = ["2026-11-17", "2026-11-18", "2026-11-19"]
SIMILARITY = 0.8
BALANCE = balance.BalanceSettings()
# Common characters: random 10-character stems give questions that are not near-duplicates of each other.
POOL = "的一是不了人我在有他这中大来上国个到说们为子和你地出道也时年得就那要下以生会自可家学部门服务配置"


def retyped_three_ways(questions: int = 150, seed: int = 7) -> list[WindowRecord]:
    """The issue's example: each question typed three ways (case, full-width punctuation,
    spacing), one way on each of three days, each with its own request."""
    rng = random.Random(seed)
    records = []
    for n in range(questions):
        stem = "".join(rng.choice(POOL) for _ in range(10))
        label = "factuality_error" if n % 3 else "incomplete_answer"
        typed = [f"Spring Boot {stem}怎么配置？", f"spring boot{stem}怎么配置?", f"  SPRING  BOOT {stem} 怎么配置 ? "]
        records += [WindowRecord(f"q{n}-{day}_{label}", question, label, day) for day, question in zip(DAYS, typed)]
    return records


def sides(records, split):
    trained = {records[i].sample_id for i in split.train + split.label_capped}
    held_out = {records[i].sample_id for i in split.eval + split.held_out_variants}
    return trained, held_out


def test_retyped_variants_never_straddle_train_and_eval():
    records = retyped_three_ways()
    split = training_data.split_window(records, 0.1, SIMILARITY, BALANCE)
    trained, held_out = sides(records, split)
    assert trained | held_out == {r.sample_id for r in records} and not trained & held_out
    assert split.question_groups == 150
    assert len(split.eval) == 15  # eval_share of the question groups, one record each
    for n in range(150):
        ids = {r.sample_id for r in records if r.sample_id.startswith(f"q{n}-")}
        assert ids <= trained or ids <= held_out, f"question {n} straddles train and eval"
    assert len(split.held_out_variants) == 2 * len(split.eval)  # neither trained on nor judged
    leakage = training_data.leakage_verdict(
        [records[i].question for i in split.train], [records[i].question for i in split.eval], SIMILARITY
    )
    assert leakage.passed and leakage.metadata["leaking_pairs"] == 0, leakage.description


def test_near_duplicates_that_differ_by_more_than_typing_stay_on_one_side():
    base = "请问我们公司的年假制度具体是怎么规定的，入职第一年有几天"
    records = [WindowRecord(f"a{n}_factuality_error", base + "呢" * n, "factuality_error", DAYS[n % 3]) for n in range(3)]
    records += retyped_three_ways(40)
    split = training_data.split_window(records, 0.5, SIMILARITY, BALANCE)
    trained, held_out = sides(records, split)
    family = {f"a{n}_factuality_error" for n in range(3)}
    assert family <= trained or family <= held_out


def skewed_window(seed: int = 3) -> list[WindowRecord]:
    """Three days of distinct questions, 90% factuality errors."""
    rng = random.Random(seed)
    records = []
    for day in DAYS:
        for n in range(300):
            label = "factuality_error" if n % 10 else ("incomplete_answer" if n % 20 else "low_relevance")
            question = "".join(rng.choice(POOL) for _ in range(12)) + "?"
            records.append(WindowRecord(f"{day}-{n}_{label}", question, label, day))
    return records


def test_eval_questions_come_from_every_day_and_label_of_the_window_and_any_prefix_too():
    records = skewed_window()
    split = training_data.split_window(records, 0.1, SIMILARITY, BALANCE)
    assert len(split.eval) == 90
    composition = training_data.composition([records[i] for i in split.eval])
    by_day = {day: sum(row["count"] for row in composition if row["day"] == day) for day in DAYS}
    assert all(29 <= count <= 31 for count in by_day.values()), by_day  # in proportion (a third each), not the first day's
    by_label = {label: sum(row["count"] for row in composition if row["label"] == label) for label in ("factuality_error", "incomplete_answer", "low_relevance")}
    assert by_label["factuality_error"] == 81 and {by_label["incomplete_answer"], by_label["low_relevance"]} == {4, 5}  # 90/5/5 %
    # The A/B table answers the first eval_questions: they cover every day too.
    first = [records[i] for i in split.eval[:30]]
    assert all(9 <= sum(r.day == day for r in first) <= 11 for day in DAYS)


def test_the_split_and_the_caps_do_not_depend_on_row_order():
    records = skewed_window()
    split = training_data.split_window(records, 0.1, SIMILARITY, BALANCE)
    shuffled = list(records)
    random.Random(5).shuffle(shuffled)
    again = training_data.split_window(shuffled, 0.1, SIMILARITY, BALANCE)
    ids = lambda rows, indexes: [rows[i].sample_id for i in indexes]  # noqa: E731
    assert ids(shuffled, again.eval) == ids(records, split.eval)  # the same questions, in the same order
    assert set(ids(shuffled, again.train)) == set(ids(records, split.train))
    assert set(ids(shuffled, again.label_capped)) == set(ids(records, split.label_capped))


def test_a_90_10_window_is_capped_to_max_label_share_by_a_stable_hash():
    records = skewed_window()
    split = training_data.split_window(records, 0.1, SIMILARITY, BALANCE)
    train = [records[i] for i in split.train]
    counts = {label: sum(r.label == label for r in train) for label in ("factuality_error", "incomplete_answer", "low_relevance")}
    others = counts["incomplete_answer"] + counts["low_relevance"]
    assert others == 90 - 9  # no minor label loses a record: 90 minus the 9 held out
    # max_label_share 60%: factuality errors are cut to 1.5 times the others.
    assert counts["factuality_error"] == int(1.5 * others) == 121
    assert counts["factuality_error"] / len(train) <= BALANCE.max_label_share
    capped = {records[i].sample_id for i in split.label_capped}
    assert len(capped) == 810 - 81 - 121 and {records[i].label for i in split.label_capped} == {"factuality_error"}
    assert split.caps == "capped factuality_error 729 -> 121"
    kept = [r.sample_id for r in train if r.label == "factuality_error"]
    assert max(map(balance.selection_rank, kept)) < min(map(balance.selection_rank, capped))  # a hash, not the order
    assert balance.balance_verdict(counts, {}, BALANCE).passed


def test_the_blocking_balance_check_fails_on_an_uncapped_skewed_set():
    verdict = balance.balance_verdict({"factuality_error": 900, "incomplete_answer": 100}, {}, BALANCE)
    assert not verdict.passed and verdict.severity == checks.ERROR
    assert "factuality_error is 90.0% of 1000 training records, above max_label_share 60%" in verdict.description
    # One label only: no subset can pass, nothing is capped and the check fails.
    assert balance.label_caps({"factuality_error": 500}, BALANCE) is None
    records = [WindowRecord(f"{n}_factuality_error", f"问题{n}号是什么意思呢", "factuality_error", DAYS[0]) for n in range(100)]
    split = training_data.split_window(records, 0.1, SIMILARITY, BALANCE)
    assert split.caps.startswith("cannot balance") and not split.label_capped


def test_the_leakage_check_fails_on_a_leaking_dataset():
    train = ["Spring Boot 怎么配置？", "退款需要多久?", "请问我们公司的年假制度具体是怎么规定的，入职第一年有几天"]
    eval_questions = ["spring boot怎么配置?", "发票怎么开", "请问我们公司的年假制度具体是怎么规定的，入职第一年有几天呢"]
    verdict = training_data.leakage_verdict(train, eval_questions, SIMILARITY)
    assert not verdict.passed and verdict.severity == checks.ERROR
    assert verdict.metadata["leaking_pairs"] == 2  # the retyped one and the near-duplicate
    assert "2 eval questions have the same normalized question or a near-duplicate" in verdict.description
    assert training_data.leakage_verdict(train, ["发票怎么开"], SIMILARITY).passed
