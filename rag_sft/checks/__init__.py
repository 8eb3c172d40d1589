"""Asset checks: the Dagster side of `core.checks` (specs, results, UI metadata)."""
