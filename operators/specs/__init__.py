"""Model specs: one YAML file per model, checked, and the DAGs built from it."""
