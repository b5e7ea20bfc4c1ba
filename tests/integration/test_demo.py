"""`make demo`'s script, run twice: each run registers exactly one new version of the tabular
model and of the text moderation model (their specs in models/), and serves both on their
development and production endpoints, production reached on the evidence of the demo's clients."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# `make demo`'s whole script, with a deploy-time bound: alone, not beside another worker (Makefile: test)
pytestmark = pytest.mark.serial


def run_demo(demo_dir: Path) -> dict:
    proc = subprocess.run(["bash", str(REPO / "demo" / "run_demo.sh")], capture_output=True, text=True,
                          env={**os.environ, "ML_DEMO_DIR": str(demo_dir)}, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = proc.stdout[proc.stdout.index("==> the registered model version"):
                         proc.stdout.index("==> airflow dags test demo_moderation__train")]
    summary = json.loads(report[report.index("{"): report.index("\n}") + 2])
    summary["endpoint_report"] = report[report.index("\n}") + 2:]
    text = proc.stdout[proc.stdout.index("==> the text moderation model"):]
    summary["text"] = json.loads(text[text.index("{"): text.index("\n}") + 2])
    summary["text"]["endpoint_report"] = text[text.index("\n}") + 2:]
    summary["evidence"] = proc.stdout.count("Evidence holds: ")
    return summary


@pytest.mark.timeout(900)  # three runs of `make demo`'s script, each under its own 600 s limit: 185-210 s each here
def test_demo_twice_registers_exactly_one_more_version_and_serves_it(tmp_path):
    try:
        _demo_twice(tmp_path)
    finally:
        from operators.deploy.targets.local import LocalServerTarget

        for endpoint in ("demo-local", "demo-production", "demo-text", "demo-text-production"):
            LocalServerTarget(endpoint, state_dir=str(tmp_path / "endpoints" / endpoint)).stop()


def _demo_twice(tmp_path):
    first = run_demo(tmp_path)
    assert first["version"] == 1 and first["versions_in_registry"] == 1
    assert first["evidence"] == 2  # both models promoted to production on their clients' requests
    for summary in (first, first["text"]):
        assert "level development: endpoint demo-" in summary["endpoint_report"]
        assert "level production: endpoint demo-" in summary["endpoint_report"]
        assert summary["endpoint_report"].count("serves version 1") >= 3  # both levels, and the curl's endpoint
    assert set(first["metrics"]) == {"accuracy", "f1", "roc_auc"} and first["metrics"]["accuracy"] > 0.9
    second = run_demo(tmp_path)
    assert second["version"] == 2 and second["versions_in_registry"] == 2
    assert second["model_digest"] != first["model_digest"] and second["n_train"] > first["n_train"]
    for summary, version in ((first, 1), (second, 2)):
        report = summary["endpoint_report"]
        assert f"serves version {version} " in report and "curl -s -X POST http://127.0.0.1:" in report
        prediction = json.loads(report[report.index('{"predictions"'):].splitlines()[0])
        assert prediction["model_version"] == str(version) and prediction["predictions"][0] in (0, 1)
    seconds = float(second["endpoint_report"].split("deploy asked -> serving: ")[1].split(" s)")[0])
    assert seconds < 5
    for summary, version in ((first, 1), (second, 2)):  # the text moderation model, on its own endpoint
        text = summary["text"]
        assert text["registered_model"] == "demo_moderation" and text["model"] == "text"
        assert text["version"] == version and text["metrics"]["accuracy"] > 0.85 and text["n_train"] > 1000
        report = text["endpoint_report"]
        assert """-d '{"instances": [{"text": "type your own post here"}]}'""" in report
        prediction = json.loads(report[report.index('{"predictions"'):].splitlines()[0])
        assert prediction["predictions"][0] in ("ok", "flagged")

    # make demo-stop, then make demo: whatever the gate decides, the demo serves and never ends
    # in a traceback (it used to call the stopped endpoint when the gate kept production).
    from operators.deploy.targets.local import LocalServerTarget

    for endpoint in ("demo-local", "demo-production"):
        LocalServerTarget(endpoint, state_dir=str(tmp_path / "endpoints" / endpoint)).stop()
    third = run_demo(tmp_path)
    report = third["endpoint_report"]
    assert "Traceback" not in report and third["versions_in_registry"] == 3
    served = report.split("serves version ")[1].split(" ")[0]
    prediction = json.loads(report[report.index('{"predictions"'):].splitlines()[0])
    assert prediction["model_version"] == served
    if "was not running" in report:  # the gate kept production: it is served again, and the demo says so
        assert f"serves production version {served} again" in report
