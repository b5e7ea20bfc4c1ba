"""The one folder (URI) every pipeline writes its artifacts under: ``ML_ARTIFACT_ROOT``, by
default ``$AIRFLOW_HOME/ml-artifacts``. The DAGs build their paths on it, and a managed local
endpoint may hot-swap only models inside it."""

from __future__ import annotations

import os


def artifact_root() -> str:
    return os.environ.get("ML_ARTIFACT_ROOT") or f"file://{os.environ.get('AIRFLOW_HOME', '/tmp')}/ml-artifacts"
