"""The MLflow registry: where it is, its schema, one version per model artifact, the aliases per
service level, and the lineage every entry records."""
