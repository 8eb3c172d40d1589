"""The thin Dagster shell: assets wire the core rules to storage and config."""
