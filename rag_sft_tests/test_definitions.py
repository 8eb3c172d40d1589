import dagster as dg

from rag_sft import definitions


def test_definitions_load():
    dg.Definitions.validate_loadable(definitions.defs)
    job = definitions.defs.resolve_job_def(definitions.DAILY_JOB)
    assert job.partitions_def is not None
    keys = {key.to_user_string() for key in definitions.defs.resolve_asset_graph().get_all_asset_keys()}
    assert keys == {"raw_events", "rejected_events", "annotated_samples", "sft_records", "sft_jsonl"}
