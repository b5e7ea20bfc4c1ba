"""The models page with no registry configured, or one that cannot be reached: it says what is
wrong and what to configure (never a bare 500), and still shows the endpoints; the metric chart's
axis stays inside the metric's range."""

from __future__ import annotations

import time

import pytest

from tests.conftest import REPO


@pytest.fixture
def page(monkeypatch):
    """The page's app with a signed-in reader and no metadata database behind the endpoints."""
    monkeypatch.syspath_prepend(str(REPO / "plugins"))  # as Airflow's plugin loader does
    from fastapi.testclient import TestClient

    from ml_models_ui import app as app_module
    from ml_models_ui import data
    from ml_models_ui.auth import reader

    monkeypatch.setattr(data, "endpoints", lambda: [data.Endpoint("demo-local", [
        {"outcome": "serving", "model": "demo_classifier", "version": "3", "at": "2026-12-01T10:00:00"}])])
    monkeypatch.setattr(app_module, "_allowed", lambda user, method, dag_id, entity="RUN": True)
    monkeypatch.setattr(data, "pending_approvals", dict)
    app = app_module.create_app()

    class User:
        def get_name(self):
            return "reader"

    app.dependency_overrides[reader] = User
    return TestClient(app)


def no_connection(monkeypatch):
    from airflow.exceptions import AirflowNotFoundException
    from airflow.models.connection import Connection

    def missing(conn_id):
        raise AirflowNotFoundException(f"The conn_id `{conn_id}` isn't defined")

    monkeypatch.setattr(Connection, "get_connection_from_secrets", staticmethod(missing))


def test_an_unconfigured_registry_is_said_with_what_to_configure_and_the_endpoints_still_show(page, monkeypatch):
    no_connection(monkeypatch)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    answer = page.get("/")
    assert answer.status_code == 200
    assert "The model registry is not configured" in answer.text
    assert "create Airflow connection &#x27;mlflow_default&#x27;" in answer.text and "MLFLOW_TRACKING_URI" in answer.text
    assert "serving-version'>3<" in answer.text  # the endpoints come from Airflow's database: still shown
    summary = page.get("/api/summary").json()
    assert summary["models"] == [] and "not configured" in summary["registry_problem"]
    assert page.get("/runs/ml_training_pipeline/manual__1").status_code == 200
    picture = page.get("/versions/demo_classifier/1/evaluation.svg")
    assert picture.status_code == 503 and "MLFLOW_TRACKING_URI" in picture.json()["detail"]


def test_an_unreachable_registry_is_said_within_seconds_without_its_password(page, monkeypatch):
    import socket

    no_connection(monkeypatch)
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://ml:s3cret-pw@127.0.0.1:{port}")
    monkeypatch.delenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", raising=False)
    started = time.monotonic()
    answer = page.get("/")
    assert answer.status_code == 200 and time.monotonic() - started < 30
    assert f"The model registry at http://***@127.0.0.1:{port} could not be read" in answer.text
    assert "s3cret-pw" not in answer.text
    picture = page.get("/versions/demo_classifier/1/evaluation.svg")
    assert picture.status_code == 503 and "could not be read" in picture.json()["detail"]
    assert "s3cret-pw" not in picture.text


@pytest.mark.parametrize("metric, values", [("accuracy", [0.98, 1.0]), ("accuracy", [1.0, 1.0]),
                                            ("roc_auc", [0.0, 0.4]), ("rmse", [0.0, 0.0]), ("r2", [0.7, 1.0])])
def test_the_chart_axis_stays_inside_the_metric_range(monkeypatch, metric, values):
    monkeypatch.syspath_prepend(str(REPO / "plugins"))
    from ml_models_ui.render import METRIC_RANGE, axis_range

    lo, hi = axis_range(metric, values)
    floor, ceiling = METRIC_RANGE[metric]
    assert lo < hi and lo <= min(values) and hi >= max(values)
    assert (floor is None or lo >= floor) and (ceiling is None or hi <= ceiling)


def test_the_chart_axis_of_a_metric_with_no_known_range_keeps_its_margin(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "plugins"))
    from ml_models_ui.render import axis_range

    assert axis_range("log_loss", [0.2, 0.4]) == pytest.approx((0.18, 0.42))


def test_the_picture_of_a_version_the_registry_does_not_hold_is_a_404(page, monkeypatch, tmp_path):
    no_connection(monkeypatch)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")  # a real, empty registry
    picture = page.get("/versions/no_such_model/7/evaluation.svg")
    assert picture.status_code == 404 and picture.json()["detail"] == "no_such_model has no version 7"
    assert page.get("/").status_code == 200 and "No registered model yet." in page.get("/").text
