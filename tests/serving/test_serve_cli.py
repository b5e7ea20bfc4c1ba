"""ml.serve's command line: every flag has an ML_SERVE_* variable of the same type, a server
that could never get a model refuses to start saying why, and several workers rebuild the same
config from the environment."""

from __future__ import annotations

from unittest import mock

import pytest

from ml import serve


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    for name in ("ML_SERVE_MODEL", "ML_SERVE_ADMIN_TOKEN", "ML_SERVE_ARTIFACT_ROOTS", "ML_SERVE_ARGV",
                 "AIP_STORAGE_URI", "AIP_HTTP_PORT", "AIP_HEALTH_ROUTE", "AIP_PREDICT_ROUTE"):
        monkeypatch.delenv(name, raising=False)


def test_environment_variables_are_read_with_the_flag_types(monkeypatch):
    monkeypatch.setenv("ML_SERVE_MODEL", "file:///models/churn/1")
    monkeypatch.setenv("ML_SERVE_MAX_BATCH", "64")
    monkeypatch.setenv("ML_SERVE_MAX_WAIT_MS", "0.5")
    monkeypatch.setenv("ML_SERVE_ACCESS_LOG", "false")
    monkeypatch.setenv("ML_SERVE_ALLOW_EMPTY", "no")
    args, config = serve.parse_args([])
    assert config.model_uri == "file:///models/churn/1"
    assert config.max_batch == 64 and config.max_wait_ms == 0.5
    assert config.access_log is False and args.allow_empty is False
    _, flags_win = serve.parse_args(["--max-batch", "8"])
    assert flags_win.max_batch == 8


def test_vertex_ai_s_variables_name_the_model_port_and_routes(monkeypatch):
    monkeypatch.setenv("AIP_STORAGE_URI", "gs://bucket/model")
    monkeypatch.setenv("AIP_HTTP_PORT", "7080")
    monkeypatch.setenv("AIP_HEALTH_ROUTE", "/v1/health")
    monkeypatch.setenv("AIP_PREDICT_ROUTE", "/v1/predict")
    args, config = serve.parse_args([])
    assert config.model_uri == "gs://bucket/model" and args.port == 7080
    assert config.health_route == "/v1/health" and config.predict_route == "/v1/predict"


@pytest.mark.parametrize("argv,env,message", [
    ([], {}, "give --model URI or --registry-model NAME"),
    (["--allow-empty"], {}, "--allow-empty needs ML_SERVE_ADMIN_TOKEN"),
    (["--allow-empty"], {"ML_SERVE_ADMIN_TOKEN": "t"}, "--allow-empty needs --artifact-root"),
])
def test_a_server_that_could_never_serve_refuses_to_start(monkeypatch, capsys, argv, env, message):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SystemExit) as exited:
        serve.parse_args(argv)
    assert exited.value.code == 2 and message in capsys.readouterr().err


def test_an_empty_server_waiting_for_a_deploy_starts_with_its_roots(monkeypatch):
    monkeypatch.setenv("ML_SERVE_ADMIN_TOKEN", "t")
    monkeypatch.setenv("ML_SERVE_ARTIFACT_ROOTS", "file:///models,s3://ml/models")
    _, config = serve.parse_args(["--allow-empty"])
    assert config.model_uri is None and config.admin_token == "t"
    assert config.artifact_roots == ("file:///models", "s3://ml/models")


def test_several_workers_rebuild_the_same_config_from_the_environment(monkeypatch):
    argv = ["--model", "file:///models/churn/1", "--max-batch", "16", "--workers", "2"]
    with mock.patch("uvicorn.run") as run:
        assert serve.main(argv) == 0
    (target,), kwargs = run.call_args
    assert target == "ml.serve:app_factory" and kwargs["factory"] is True and kwargs["workers"] == 2
    built = serve.app_factory()  # what each worker process calls
    assert built.config.model_uri == "file:///models/churn/1" and built.config.max_batch == 16
    monkeypatch.delenv("ML_SERVE_ARGV")
    with mock.patch("uvicorn.run") as run:
        serve.main(["--model", "file:///models/churn/1"])
    (app,), kwargs = run.call_args
    assert app.config.model_uri == "file:///models/churn/1" and kwargs["loop"] == "uvloop"
