"""An ml.serve endpoint started elsewhere (compose's `serving`), reached through connection
`ml_endpoint`: it starts empty, the target hot-swaps models in, and its state is read through
its URL only."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from operators.deploy.targets import DeployRefusedError, Served, get_target
from operators.deploy.endpoint_client import invoke, ping
from tests.serving_helpers import REPO, ServerProcess

TOKEN = "s3cret-admin-token"


def test_an_empty_server_gets_models_through_the_connection_target(trained_models, monkeypatch, tmp_path):
    with ServerProcess("--allow-empty", env={"ML_SERVE_ADMIN_TOKEN": TOKEN, "ML_SERVE_ARTIFACT_ROOTS": trained_models["root"]},
                       ready="/openapi.json") as srv:
        assert ping(srv.url) is None  # 503 until a deploy
        monkeypatch.setenv("AIRFLOW_CONN_ML_ENDPOINT_IT", json.dumps(
            {"conn_type": "http", "host": "127.0.0.1", "port": srv.port, "password": TOKEN}))
        target = get_target("local", "it", "ml_endpoint_it", {"state_dir": str(tmp_path / "state")})
        assert target.url == srv.url and not target.managed and target.current() is None
        handle = target.deploy(Served("1", trained_models["1"]))
        assert handle["facts"]["action"] == "hot-swap" and handle["facts"]["model_version"] == "1"
        assert TOKEN not in json.dumps(handle)  # the handle travels to the triggerer: names only
        assert handle["kind"] == "local" and handle["conn_id"] == "ml_endpoint_it" and handle["url"] == srv.url
        served = target.current()
        assert (served.version, served.uri) == ("1", trained_models["1"])
        target.deploy(Served("2", trained_models["2"]))
        width = len(ping(srv.url)["features"])
        assert target.current().version == "2" and invoke(srv.url, [[1.0] * width])["model_version"] == "2"
        target.stop()  # a server reached by URL is not ours to stop
        assert ping(srv.url)["model_version"] == "2"

    with ServerProcess("--allow-empty", env={"ML_SERVE_ADMIN_TOKEN": TOKEN, "ML_SERVE_ARTIFACT_ROOTS": trained_models["root"]},
                       ready="/openapi.json") as srv:
        monkeypatch.setenv("AIRFLOW_CONN_ML_ENDPOINT_IT", json.dumps(
            {"conn_type": "http", "host": "127.0.0.1", "port": srv.port, "password": "wrong"}))
        target = get_target("local", "it", "ml_endpoint_it", {"state_dir": str(tmp_path / "state")})
        with pytest.raises(DeployRefusedError, match="401|403"):
            target.deploy(Served("1", trained_models["1"]))


def test_allow_empty_without_an_admin_token_is_refused_with_the_reason():
    proc = subprocess.run([sys.executable, "-m", "ml.serve", "--allow-empty", "--port", "1"], cwd=REPO,
                          capture_output=True, text=True, timeout=60, env={"PATH": "/usr/bin:/bin"})
    assert proc.returncode == 2 and "needs ML_SERVE_ADMIN_TOKEN" in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "ml.serve", "--allow-empty", "--port", "1"], cwd=REPO,
                          capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin", "ML_SERVE_ADMIN_TOKEN": TOKEN})
    assert proc.returncode == 2 and "needs --artifact-root" in proc.stderr
