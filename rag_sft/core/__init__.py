"""Domain rules as plain functions over records; no Dagster, no I/O."""
