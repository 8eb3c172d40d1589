"""What training reads and publishes: `dataset_versions` (immutable dataset versions),
`corrections` (a person's corrected answers) and `model_registry` (model versions and the one
in use)."""
