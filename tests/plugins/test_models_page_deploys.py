"""The models page as the table of models x service levels (the repo's two demo specs, plus an
endpoint no spec names). Deploys, rollbacks and promotions go to the DAG that deploys to that
endpoint (a spec's ``<model>__deploy``, else ``ml_deploy``) and approvals to the training run,
all through Airflow's REST API as the user, and only for a user Airflow lets do it."""

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
        def do_PATCH(self):
            self.do_POST()

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            seen.append({"method": self.command, "path": self.path, "body": body,
                         "auth": self.headers.get("Authorization")})
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
    """The page with three endpoints (demo_classifier's two levels, and the deployment's own), a
    registry with 25 versions of demo_classifier, a promotion of demo_moderation waiting for
    approval, and a user who may trigger ml_deploy and demo_moderation's DAGs but not
    demo_classifier__deploy."""
    monkeypatch.syspath_prepend(str(REPO / "plugins"))
    from fastapi.testclient import TestClient

    from ml_models_ui import app as app_module
    from ml_models_ui import data
    from ml_models_ui.auth import reader

    monkeypatch.setattr(data, "endpoints", lambda: [
        data.Endpoint("demo-local", [SERVING]), data.Endpoint("ml-default", [SERVING]), data.Endpoint("never", []),
        data.Endpoint("demo-text", [{**SERVING, "model": "demo_moderation", "version": "4"}])])
    versions = [data.Version(str(v), f"file:///m/{v}", 0, [], {"accuracy": 0.9}, {}, "d" * 12, "x")
                for v in range(25, 0, -1)]
    monkeypatch.setattr(data, "registry_models", lambda: ([data.Model("demo_classifier", {}, versions)], None))
    waiting = data.Approval("demo_moderation__train", "manual__7", "approve_production",
                            "Promote demo_moderation to production?")
    monkeypatch.setattr(data, "pending_approvals", lambda: {("demo_moderation__train", "production"): waiting})
    allowed = {"ml_deploy", "ml_training_pipeline", "demo_moderation__deploy", "demo_moderation__train"}

    def may(user, method, dag_id, entity="RUN"):
        return method == "GET" or dag_id in allowed

    monkeypatch.setattr(app_module, "_allowed", may)
    from ml_models_ui import auth

    monkeypatch.setattr(auth, "_allowed", may)
    app = app_module.create_app()

    class User:
        def get_name(self):
            return "ops"

    app.dependency_overrides[reader] = User
    return TestClient(app)


def cell(html: str, endpoint: str) -> str:
    start = html.index(f"data-endpoint='{endpoint}'")
    return html[start:html.index("</td>", start)]


def test_the_table_has_a_row_per_model_and_a_column_per_level_with_buttons_only_where_the_user_may(page):
    html = page.get("/").text
    table = html[html.index("<table class='levels'>"):html.index("</table>", html.index("<table class='levels'>"))]
    assert "<th>development</th><th>production</th><th>endpoint</th>" in table
    rows = [r.split("'")[0] for r in table.split("data-model='")[1:]]
    # the last: ml-default, which no spec names; "never", with an empty ledger and no spec, is not a row
    assert rows == ["demo_classifier", "demo_moderation", "demo_classifier"] and "never" not in table
    dev = cell(html, "demo-local")
    assert "serves <b class='serving-version'>v2</b>" in dev and "last deploy: serving v2" in dev
    assert "button class='rollback'" not in dev and "class='deploy'" not in dev and "promote" not in dev
    assert "serves nothing yet" in cell(html, "demo-production")
    text_dev = cell(html, "demo-text")  # a level the user may deploy: deploy, rollback, promote
    assert "class='rollback'" in text_dev and "Promote v4 to production</button>" in text_dev
    own = cell(html, "ml-default")
    assert "class='rollback'" in own and "<option value='25'>v25</option>" in own and "promote" not in own
    waiting = cell(html, "demo-text-production")
    assert "waiting for approval: Promote demo_moderation to production?" in waiting
    assert "value='Approve'" in waiting and "value='Reject'" in waiting
    summary = page.get("/api/summary").json()
    assert {e["name"]: e["deploy_dag"] for e in summary["endpoints"]} == {
        "demo-local": "demo_classifier__deploy", "ml-default": "ml_deploy", "demo-text": "demo_moderation__deploy",
        "never": "ml_deploy"}


def test_owner_and_tag_filters_keep_the_matching_models_and_versions_are_paginated(page):
    html = page.get("/?owner=trust-and-safety").text
    assert "data-model='demo_moderation'" in html and "data-model='demo_classifier'" not in html
    assert "<option value='trust-and-safety' selected>" in html
    html = page.get("/?tag=tabular").text
    assert "data-model='demo_classifier'" in html and "data-model='demo_moderation'" not in html
    html = page.get("/").text
    shown = [r.split("'")[0] for r in html.split("class='version' data-version='")[1:]]
    assert shown == [str(v) for v in range(25, 15, -1)]  # the newest ten
    assert "page 1 of 3" in html and "page.demo_classifier=1" in html
    html = page.get("/?page.demo_classifier=2&tag=tabular").text
    assert [r.split("'")[0] for r in html.split("class='version' data-version='")[1:]] == [str(v) for v in range(5, 0, -1)]
    assert "page 3 of 3" in html and "older" not in html and "tag=tabular" in html  # the filter kept
    assert len(html.split("class='point'")) == 26  # the chart draws every version


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
    refused = page.post("/endpoints/demo-local/promote", data={"model": "demo_classifier"})
    assert refused.status_code == 403 and "so may not promote" in refused.json()["detail"]
    assert len(airflow_api) == 1
    cross_site = page.post("/endpoints/ml-default/rollback", data={"model": "demo_classifier"},
                           headers={"Origin": "https://evil.example"})
    assert cross_site.status_code == 403 and len(airflow_api) == 1


def test_promoting_deploys_the_served_version_to_the_next_level_and_moves_its_alias(page, airflow_api):
    no_token = page.post("/endpoints/demo-text/promote", data={"model": "demo_moderation"})
    assert no_token.status_code == 401 and "sign in again" in no_token.json()["detail"]
    answer = page.post("/endpoints/demo-text/promote", data={"model": "demo_moderation"},
                       headers={"Authorization": "Bearer the-users-token"})
    assert answer.json() == {"dag_id": "demo_moderation__deploy", "dag_run_id": "manual__1"}
    assert airflow_api[0]["body"]["conf"] == {"model": "demo_moderation", "version": "4", "action": "deploy",
                                              "endpoint": "demo-text-production", "move_alias": "production"}
    last = page.post("/endpoints/demo-text-production/promote", data={"model": "demo_moderation"})
    assert last.status_code == 400 and "with a level after it" in last.json()["detail"]
    empty = page.post("/endpoints/ml-default/promote", data={"model": "demo_classifier"})
    assert empty.status_code == 400 and len(airflow_api) == 1


def test_approving_answers_the_required_action_as_the_user(page, airflow_api):
    answer = page.post("/approvals/demo_moderation__train/manual__7/approve_production", data={"choice": "Approve"},
                       headers={"Authorization": "Bearer the-users-token"})
    assert answer.status_code == 200 and answer.json()["chosen"] == "Approve"
    (call,) = airflow_api
    assert call["method"] == "PATCH" and call["auth"] == "Bearer the-users-token"
    assert call["path"] == ("/api/v2/dags/demo_moderation__train/dagRuns/manual__7/taskInstances/"
                            "approve_production/-1/hitlDetails")
    assert call["body"] == {"chosen_options": ["Approve"], "params_input": {}}
    assert page.post("/approvals/demo_moderation__train/manual__7/approve_production",
                     data={"choice": "Maybe"}).status_code == 400
    refused = page.post("/approvals/demo_classifier__train/manual__1/approve_production", data={"choice": "Approve"})
    assert refused.status_code == 403 and len(airflow_api) == 1


def test_a_model_whose_spec_is_broken_shows_its_endpoints_with_the_error_and_no_button(page, monkeypatch, tmp_path):
    import shutil

    from operators.specs import model_spec

    from ml_models_ui import data

    for name in ("demo_classifier.yaml", "demo_moderation.yaml", "sql"):
        (shutil.copytree if name == "sql" else shutil.copy)(REPO / "models" / name, tmp_path / name)
    text = (tmp_path / "demo_moderation.yaml").read_text()
    (tmp_path / "demo_moderation.yaml").write_text(text.replace("owners: [", "owner: ["))  # an unknown key
    monkeypatch.setattr(model_spec, "SPEC_FOLDER", tmp_path)
    html = page.get("/").text
    row = html[html.index("data-model='demo_moderation'"):html.index("</tr>", html.index("data-model='demo_moderation'"))]
    assert "demo_moderation.yaml" in row and "owner" in row and "class='problem spec-problem'" in row
    assert "data-endpoint='demo-text'" in row and "<form" not in row  # its DAGs do not load: nothing to trigger
    assert "class='rollback'" in cell(html, "ml-default")  # the others keep theirs
    assert data.deploy_dag_of("demo-local") == "demo_classifier__deploy"


def test_promote_is_offered_only_while_the_next_level_serves_another_version(page):
    from ml_models_ui import data, render

    production = data.Level("production", "demo-text-production")
    development = data.Level("development", "demo-text", production)
    row = data.ModelRow("demo_moderation", [], [], [development, production], "demo_moderation__deploy",
                        "demo_moderation__train")
    serving = data.Endpoint("demo-text", [{**SERVING, "model": "demo_moderation", "version": "4"}])
    offered = render.level_cell(row, development, serving, "/p", True, ["4"], None, False, next_serves="3")
    assert "Promote v4 to production" in offered
    assert "promote" not in render.level_cell(row, development, serving, "/p", True, ["4"], None, False, next_serves="4")
