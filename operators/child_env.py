"""The environment a process this project starts on the worker gets: the basics and the
artifact store's settings (it reads and writes artifacts), nothing else. Airflow connections
(``AIRFLOW_CONN_*``), registry credentials and whatever else the worker holds stay in the
worker: a trainer or a model server that outlives the task cannot leak what it never had."""

from __future__ import annotations

import os
from pathlib import Path

PASSED = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE",
          "AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION", "AWS_REGION", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
          "AWS_SESSION_TOKEN", "AWS_PROFILE", "STORAGE_EMULATOR_HOST", "GOOGLE_APPLICATION_CREDENTIALS",
          "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "VIRTUAL_ENV", "OMP_NUM_THREADS",
          # the model classes this deployment allows (ml/models/classes.py), the image it runs in
          "ML_MODEL_CLASSES", "ML_IMAGE",
          # prediction capture of the endpoints this worker starts (docs/monitoring.md)
          "ML_SERVE_CAPTURE_RATE", "ML_SERVE_CAPTURE_URI", "ML_SERVE_CAPTURE_MAX_ROWS", "ML_SERVE_CAPTURE_FLUSH_SECONDS",
          # coverage.py's switch for child processes (its settings, no secret): under `make test`
          # the trainer and the model server report the lines they ran, as every other process does
          "COVERAGE_PROCESS_CONFIG", "COVERAGE_PROCESS_START")


def child_environment(**extra: str) -> dict[str, str]:
    """``PASSED`` from this process, this checkout first on ``PYTHONPATH`` (``ml/`` runs from
    it), plus ``extra``."""
    env = {k: os.environ[k] for k in PASSED if k in os.environ}
    project_root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (project_root, os.environ.get("PYTHONPATH")) if p)
    return {**env, **extra}
