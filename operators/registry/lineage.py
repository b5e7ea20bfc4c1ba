"""Run facts every artifact and registry entry records, so any model traces back to its run."""

from __future__ import annotations

import functools
import os
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow.sdk import Context


@functools.cache
def code_version() -> str:
    """``ML_CODE_VERSION`` if set (images set it at build), else the git commit of this checkout."""
    if version := os.environ.get("ML_CODE_VERSION"):
        return version
    from ml import __version__

    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
        return f"{__version__}+g{sha}"
    except (OSError, subprocess.SubprocessError):
        return __version__


def run_lineage(context: Context, task_id: str) -> dict[str, Any]:
    start, end = context.get("data_interval_start"), context.get("data_interval_end")
    logical = context.get("logical_date")
    return {
        "dag_id": context["dag"].dag_id,
        "run_id": context["run_id"],
        "task_id": task_id,
        "logical_date": logical.isoformat() if logical else None,
        "data_interval_start": start.isoformat() if start else None,
        "data_interval_end": end.isoformat() if end else None,
        "code_version": code_version(),
    }
