"""What the pipeline remembers between runs: `state_db` (local SQLite files or one PostgreSQL
database) and the stores on it (`request_index`, `near_duplicate_index`, `erasure_ledger`,
`training_ledger`), and the `export_ledger` folded from Dagster's event log."""
