"""Watching a model's data: column profiles, data checks before training, drift (no Airflow imports)."""
