"""`make demo`'s script, run twice: each run registers exactly one new version."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def run_demo(demo_dir: Path) -> dict:
    proc = subprocess.run(["bash", str(REPO / "demo" / "run_demo.sh")], capture_output=True, text=True,
                          env={**os.environ, "ML_DEMO_DIR": str(demo_dir)}, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = proc.stdout[proc.stdout.index("==> the registered model version"):]
    return json.loads(report[report.index("{"): report.rindex("}") + 1])


def test_demo_twice_registers_exactly_one_more_version(tmp_path):
    first = run_demo(tmp_path)
    assert first["version"] == 1 and first["versions_in_registry"] == 1
    assert set(first["metrics"]) == {"accuracy", "f1", "roc_auc"} and first["metrics"]["accuracy"] > 0.9
    second = run_demo(tmp_path)
    assert second["version"] == 2 and second["versions_in_registry"] == 2
    assert second["model_digest"] != first["model_digest"] and second["n_train"] > first["n_train"]
