"""Reading event sources and writing the warehouse and dataset files.

From the bottom up; each imports only what is listed before it (`rag_sft_tests/test_layout.py`):

    sql_urls.py database URLs: which engine, and how one is shown (password masked)
    storage/    where files live (a local folder or s3://), the Parquet warehouse, byte ranges
    registry/   what training reads and publishes: dataset versions, corrections, models
    llm/        OpenAI-compatible endpoints: corrected answers, their cache, the judge
    state/      what the pipeline remembers between runs: the state database and its stores
    sources/    the events: the landing folder (its index, its parallel scan) and the SQL table
    erasure.py  erasure on request, across the warehouse, the datasets and the models
"""
