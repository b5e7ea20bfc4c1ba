"""Extraction: a SQL source or a warehouse into a versioned Parquet snapshot, and the published
snapshots that start a retraining."""
