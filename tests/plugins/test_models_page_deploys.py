"""Deploys and rollbacks from the models page go to the DAG that deploys to that endpoint: a model
spec's ``<model>__deploy`` for its levels' endpoints, ``ml_deploy`` otherwise, created through
Airflow's REST API as the user, and only for a user Airflow lets trigger that DAG."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.conftest import REPO

SERVING = {"outcome": "serving", "model": "demo_classifier", "version": "2", "at": "2026-12-01T10:00:00"}


@pytest.fixture
def airflow_api(monkeypatch):
    """A stand-in of Airflow's REST API: records each POST of a DAG run, answers with a run id."""
    seen = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            seen.append({"path": self.path, "body": body, "auth": self.headers.get("Authorization")})
            answer = json.dumps({"dag_run_id": f"manual__{len(seen)}"}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("AIRFLOW__API__BASE_URL", f"http://127.0.0.1:{server.server_port}")
    yield seen
    server.shutdown()


@pytest.fixture
def page(monkeypatch):
    """The page with two endpoints (a spec's level, and the deployment's own), a registry with two
    versions, and a user who may trigger ml_deploy but not demo_classifier__deploy."""
    monkeypatch.syspath_prepend(str(REPO / "plugins"))
    from fastapi.testclient import TestClient

    from ml_models_ui import app as app_module
    from ml_models_ui import data
    from ml_models_ui.auth import reader

    monkeypatch.setattr(data, "endpoints", lambda: [data.Endpoint("demo-local", [SERVING]),
                                                    data.Endpoint("ml-default", [SERVING])])
    versions = [data.Version(v, f"file:///m/{v}", 0, [], {}, {}, "d" * 12, "x") for v in ("2", "1")]
    monkeypatch.setattr(data, "registry_models", lambda: ([data.Model("demo_classifier", {}, versions)], None))
    allowed = {"ml_deploy", "ml_training_pipeline"}
    monkeypatch.setattr(app_module, "_allowed", lambda user, method, dag_id: method == "GET" or dag_id in allowed)
    from ml_models_ui import auth

    monkeypatch.setattr(auth, "_allowed", lambda user, method, dag_id: method == "GET" or dag_id in allowed)
    app = app_module.create_app()

    class User:
        def get_name(self):
            return "ops"

    app.dependency_overrides[reader] = User
    return TestClient(app)


def test_each_endpoint_names_its_deploy_dag_and_shows_buttons_only_where_the_user_may_trigger_it(page):
    html = page.get("/").text
    spec_section = html[html.index("data-endpoint='demo-local'"):html.index("data-endpoint='ml-default'")]
    own_section = html[html.index("data-endpoint='ml-default'"):]
    assert "data-deploy-dag='demo_classifier__deploy'" in spec_section
    assert "button class='rollback'" not in spec_section and "class='deploy'" not in spec_section
    assert "data-deploy-dag='ml_deploy'" in own_section
    assert "button class='rollback'" in own_section
    assert "<option value='2'>2</option><option value='1'>1</option>" in own_section  # any registered version
    summary = page.get("/api/summary").json()
    assert {e["name"]: e["deploy_dag"] for e in summary["endpoints"]} == {
        "demo-local": "demo_classifier__deploy", "ml-default": "ml_deploy"}


def test_deploying_a_chosen_version_creates_the_run_as_the_user_and_a_refused_dag_creates_none(page, airflow_api):
    answer = page.post("/endpoints/ml-default/deploy", data={"model": "demo_classifier", "version": "1"},
                       headers={"Authorization": "Bearer the-users-token"})
    assert answer.status_code == 200 and answer.json() == {"dag_id": "ml_deploy", "dag_run_id": "manual__1"}
    (run,) = airflow_api
    assert run["path"] == "/api/v2/dags/ml_deploy/dagRuns" and run["auth"] == "Bearer the-users-token"
    assert run["body"]["conf"] == {"model": "demo_classifier", "version": "1", "action": "deploy",
                                   "endpoint": "ml-default"}
    assert "deploy asked from the models page by ops" == run["body"]["note"]
    refused = page.post("/endpoints/demo-local/deploy", data={"model": "demo_classifier", "version": "1"})
    assert refused.status_code == 403
    assert "may not trigger demo_classifier__deploy, so may not deploy" in refused.json()["detail"]
    refused = page.post("/endpoints/demo-local/rollback", data={"model": "demo_classifier"})
    assert refused.status_code == 403 and "so may not roll back" in refused.json()["detail"]
    assert len(airflow_api) == 1
    cross_site = page.post("/endpoints/ml-default/rollback", data={"model": "demo_classifier"},
                           headers={"Origin": "https://evil.example"})
    assert cross_site.status_code == 403 and len(airflow_api) == 1
