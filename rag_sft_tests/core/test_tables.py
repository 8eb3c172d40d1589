"""The batch transforms agree with the row-level rules they speed up."""

import random

import orjson
import pyarrow as pa
import pytest

from rag_sft.core import ingest, rules, tables
from rag_sft.core.completion import CompletionBatch, NaiveCompletion
from rag_sft.core.generator import GeneratorSettings, day_lines
from rag_sft.core.ingest import SourceLine
from rag_sft.core.rules import RuleSettings


def raw_batch(events_per_day=120, seed=3):
    from datetime import date

    lines = [
        SourceLine("f", n, line.rstrip(b"\n"))
        for n, line in enumerate(day_lines(date(2026, 11, 19), GeneratorSettings(events_per_day=events_per_day, seed=seed)), 1)
    ]
    batches = list(ingest.ingest(lines, 32768, 10_000, ingest.IngestCounts()))
    return batches[0].accepted


def test_top_k_docs_matches_select_context_including_ties_and_missing_scores():
    rng = random.Random(1)
    rows = []
    for _ in range(200):
        rows.append([
            {"id": str(i), "content": f"c{i}", "score": rng.choice([None, 0.0, 0.5, 0.5, rng.random()])}
            for i in range(rng.randint(0, 7))
        ])
    docs = pa.array([[{**d, "score": d["score"] if d["score"] is not None else 0.0} for d in row] for row in rows], pa.list_(tables.DOC))
    for k in (1, 3, 10):
        got = tables.top_k_docs(docs, k).to_pylist()
        expected = [[{**d, "score": d["score"] or 0.0} for d in rules.select_context(row, k)] for row in rows]
        assert got == expected


def test_annotated_and_records_batches_follow_the_rules():
    settings = RuleSettings()
    raw = raw_batch()
    annotated = tables.annotate_batch(raw, settings)
    records = tables.records_batch(annotated, settings, NaiveCompletion(), {"factuality_error": 2.0})
    for event, sample, record in zip(raw.to_pylist(), annotated.to_pylist(), records.to_pylist()):
        label = rules.main_label(event["labels"])
        language = rules.question_language(event["question"])
        context = rules.select_context(event["docs"], 3)
        assert sample["label"] == label and sample["language"] == language
        assert sample["sample_id"] == f"{event['request_id']}_{label}"
        assert sample["context_docs"] == context
        assert sample["instruction"] == rules.correction_instruction(label, language)
        assert sample["confidence"] == pytest.approx(rules.confidence(event["score"]))
        assert record["prompt"] == rules.build_prompt(event["question"], context, sample["instruction"], language)
        assert record["sample_weight"] == pytest.approx(rules.sample_weight(sample["confidence"]))
        if sample["confidence"] >= 0.6:
            assert record["status"] == "exported" and record["filter_reason"] is None
            assert record["completion"] == rules.naive_completion(label, event["answer"], language)
            assert record["label_weight"] == (2.0 if label == "factuality_error" else None)
        else:
            assert record["status"] == "filtered" and record["filter_reason"] == "low_confidence"
            assert record["completion"] is None and record["label_weight"] is None


JSON_TEXTS = ["plain", "中文“引号”", 'quote " and \\ backslash', "lines\nand\rtabs\t", "bell\x07 and nul\x00", "/slash", "", "\x1f\u2028"]


def test_json_strings_write_what_orjson_writes():
    literals = tables.json_strings(pa.array([*JSON_TEXTS, None], pa.string())).to_pylist()
    assert literals == [orjson.dumps(text).decode() for text in JSON_TEXTS] + ["null"]
    assert [orjson.loads(literal) for literal in literals[:-1]] == JSON_TEXTS


def test_json_numbers_write_what_orjson_writes():
    values = [1.0, 0.1, 1e-7, 0.30000000000000004, 2.5e20, 123456789.0, 5.0, 0.0, 1.3333333333333333]
    assert tables.json_numbers(pa.array([*values, None], pa.float64())).to_pylist() == [
        orjson.dumps(v).decode() for v in values
    ] + ["null"]


def test_jsonl_chunk_lines_parse_back_to_the_exported_records():
    settings = RuleSettings()
    records = tables.records_batch(tables.annotate_batch(raw_batch(), settings), settings, NaiveCompletion(), {})
    chunk = tables.jsonl_chunk(records, "2026-11-19")
    lines = chunk.data.to_pybytes().splitlines()
    exported = [r for r in records.to_pylist() if r["status"] == "exported"]
    assert len(lines) == len(exported) == chunk.lines > 0
    for line, record in zip(lines, exported):
        parsed = orjson.loads(line)
        assert list(parsed) == list(tables.samples.JSONL_FIELDS)
        assert parsed["date"] == "2026-11-19"
        for field in parsed:
            if field == "completion_model":  # no model wrote a naive completion: "" in every file
                assert (parsed[field], record[field]) == ("", None)
            elif field != "date":
                assert parsed[field] == record[field]


class EveryOtherFails:
    """A strategy that cannot complete every second sample: they must not be exported."""

    name = "partial"

    def complete(self, samples, prompts):
        texts = [None if i % 2 else f"answer {i}" for i in range(samples.num_rows)]
        models = [None if t is None else f"m{i}" for i, t in enumerate(texts)]
        return CompletionBatch(
            pa.array(texts, pa.string()), [("refused" if t is None else None) for t in texts], pa.array(models, pa.string())
        )

    def metadata(self):
        return {}


def test_samples_without_a_completion_are_filtered_with_the_strategys_reason():
    settings = RuleSettings()
    annotated = tables.annotate_batch(raw_batch(), settings)
    records = tables.records_batch(annotated, settings, EveryOtherFails(), {}).to_pylist()
    eligible = [r for r in records if r["confidence"] >= 0.6]
    for position, record in enumerate(eligible):
        if position % 2:
            assert (record["status"], record["filter_reason"], record["completion"]) == (
                "filtered",
                "completion_refused",
                None,
            )
            assert (record["completion_strategy"], record["completion_model"]) == (None, None)
        else:
            assert (record["status"], record["completion"]) == ("exported", f"answer {position}")
            assert (record["completion_strategy"], record["completion_model"]) == ("partial", f"m{position}")
    assert all(r["filter_reason"] == "low_confidence" for r in records if r["confidence"] < 0.6)


def test_a_held_back_day_relabels_its_exported_records_and_nothing_else():
    settings = RuleSettings()
    records = tables.records_batch(tables.annotate_batch(raw_batch(), settings), settings, NaiveCompletion(), {})
    assert set(records.column("status").to_pylist()) == {"exported", "filtered"}
    assert records.column("held_back_by").null_count == records.num_rows

    held = tables.held_back_batch(records, ["confidence", "label_balance"])
    assert held.schema == tables.SFT_RECORDS
    for before, after in zip(records.to_pylist(), held.to_pylist()):
        if before["status"] == "exported":
            assert (after["status"], after["held_back_by"]) == ("held_back", "confidence,label_balance")
        else:
            assert (after["status"], after["held_back_by"]) == ("filtered", None)
        assert {k: v for k, v in after.items() if k not in ("status", "held_back_by")} == {
            k: v for k, v in before.items() if k not in ("status", "held_back_by")
        }
    assert tables.jsonl_chunk(held, "2026-11-19").lines == 0  # nothing of it can be exported


def test_the_naive_strategy_filters_a_blank_answer_with_its_own_reason_and_the_llm_can_still_correct_it():
    settings = RuleSettings()
    raw = raw_batch()
    answers = raw.column("answer").to_pylist()
    answers[0], answers[1] = "", " \n"
    raw = raw.set_column(raw.schema.get_field_index("answer"), "answer", pa.array(answers, pa.string()))
    raw = raw.set_column(raw.schema.get_field_index("score"), "score", pa.array([0.9] * raw.num_rows))
    annotated = tables.annotate_batch(raw, settings)

    naive = tables.records_batch(annotated, settings, NaiveCompletion(), {}).to_pylist()
    for record in naive[:2]:
        assert (record["status"], record["filter_reason"], record["completion"]) == ("filtered", rules.EMPTY_ANSWER, None)
    assert all(record["status"] == "exported" for record in naive[2:])

    corrected = tables.records_batch(annotated, settings, AnswersEverything(), {}).to_pylist()
    assert corrected[0]["status"] == "exported" and corrected[0]["completion"] == "corrected 0"


class AnswersEverything:
    """An LLM strategy whose model corrects every sample."""

    name = "llm"

    def complete(self, samples, prompts):
        texts = [f"corrected {i}" for i in range(samples.num_rows)]
        return CompletionBatch(pa.array(texts), [None] * len(texts), pa.array(["teacher"] * len(texts)))

    def metadata(self):
        return {}


@pytest.mark.parametrize("llm_day_first", [False, True])
def test_the_jsonl_of_naive_and_llm_days_loads_as_one_dataset_in_either_order(tmp_path, llm_day_first):
    datasets = pytest.importorskip("datasets")
    settings = RuleSettings()
    annotated = tables.annotate_batch(raw_batch(), settings)
    files = {}
    for day, strategy in (("2026-11-18", NaiveCompletion()), ("2026-11-19", AnswersEverything())):
        records = tables.records_batch(annotated, settings, strategy, {"factuality_error": 2.0, "incomplete_answer": 3.0})
        path = tmp_path / f"date={day}" / "records.jsonl"
        path.parent.mkdir()
        path.write_bytes(bytes(tables.jsonl_chunk(records, day).data))
        files[strategy.name] = str(path)
    order = [files["llm"], files["naive"]] if llm_day_first else [files["naive"], files["llm"]]

    loaded = datasets.load_dataset("json", data_files=order, split="train", cache_dir=str(tmp_path / "cache"))
    by_strategy = {name: loaded.filter(lambda row, name=name: row["completion_strategy"] == name) for name in files}
    assert len(by_strategy["naive"]) and len(by_strategy["llm"])
    assert set(by_strategy["naive"]["completion_model"]) == {""} and set(by_strategy["llm"]["completion_model"]) == {"teacher"}
