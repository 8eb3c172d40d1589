"""Sensors: the Dagster side of `core.trigger`."""
