"""RegisterModelOperator against a real MLflow registry (SQLite file and PostgreSQL backends)."""

from __future__ import annotations

import json

import pytest
from airflow.sdk import Asset
from airflow.sdk.exceptions import AirflowException, AirflowFailException

from ml import artifacts, train
from operators.registry import register_model
from operators.registry.register_model import RegisterModelOperator
from tests.helpers import FakeTaskInstance, breast_cancer_table, write_snapshot


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Two model artifacts of different content, trained once for the module."""
    root = tmp_path_factory.mktemp("models")
    snap = str(root / "snap")
    write_snapshot(snap, breast_cancer_table(), lineage={"dag_id": "ml_training_pipeline", "run_id": "r0"})
    out = {}
    for name, seed in (("a", 1), ("b", 2)):
        config = train.parse_config({"estimator": "HistGradientBoostingClassifier", "target": "target",
                                     "params": {"max_iter": 20}, "seed": seed})
        train.train(snap, str(root / name), config, {"run_id": f"run-{name}"})
        out[name] = str(root / name)
    return out


@pytest.fixture(params=["sqlite", "postgres"])
def registry(request, tmp_path, monkeypatch):
    if request.param == "sqlite":
        uri = f"sqlite:///{tmp_path}/mlflow.db"
    else:
        uri = request.getfixturevalue("make_database")("mlp_mlflow").replace("postgresql://", "postgresql+psycopg2://")
    monkeypatch.setenv("AIRFLOW_CONN_MLFLOW_TEST", json.dumps(
        {"conn_type": "generic", "extra": {"tracking_uri": uri, "artifact_location": str(tmp_path / "mlartifacts")}}))
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def register(model_uri, context, **kwargs):
    op = RegisterModelOperator(task_id="register", model_uri=model_uri, model_name="cancer",
                               mlflow_conn_id="mlflow_test", **kwargs)
    return op.execute(context)


def test_registers_with_metrics_params_and_lineage_then_never_twice(registry, models, make_context):
    first = register(models["a"], make_context(run_id="run-a"))
    manifest = artifacts.read_manifest(models["a"])
    assert first["created"] and first["version"] == "1" and first["digest"] == manifest.digest
    version = registry.get_model_version("cancer", "1")
    assert version.source == models["a"]
    assert version.tags["model_digest"] == manifest.digest
    assert version.tags["snapshot_digest"] == manifest.lineage["snapshot_digest"]
    assert version.tags["lineage.dag_id"] == "test_dag" and version.tags["lineage.run_id"] == "run-a"
    run = registry.get_run(version.run_id)
    assert run.data.metrics == pytest.approx(manifest.extra["metrics"])
    assert run.data.params["estimator"] == "HistGradientBoostingClassifier" and run.data.params["max_iter"] == "20"

    again = register(models["a"], make_context(run_id="run-a-retry"))
    assert again["version"] == "1" and not again["created"]
    assert len(registry.search_model_versions("name = 'cancer'")) == 1

    other = register(models["b"], make_context(run_id="run-b"))
    assert other["version"] == "2" and other["created"]
    assert len(registry.search_model_versions("name = 'cancer'")) == 2


def test_a_racing_duplicate_is_removed_and_the_oldest_version_returned(registry, models, make_context, monkeypatch):
    winner = register(models["a"], make_context())
    real_find = register_model.find_version
    lookups = []

    def find_after_a_miss(*args):
        """The first lookup misses, as if the other run had not committed yet; later ones are real."""
        lookups.append(args)
        return None if len(lookups) == 1 else real_find(*args)

    monkeypatch.setattr(register_model, "find_version", find_after_a_miss)
    result = register(models["a"], make_context(run_id="racer"))
    assert result["version"] == winner["version"] and not result["created"]
    assert len(lookups) == 2
    assert [str(v.version) for v in registry.search_model_versions("name = 'cancer'")] == [winner["version"]]


def test_asset_event_names_the_version(registry, models, make_context):
    asset = Asset(name="cancer.registered", uri="file:///models/cancer")
    context = make_context()
    result = register(models["a"], context, outlets=[asset])
    assert context["outlet_events"][asset].extra == {
        "name": "cancer", "version": result["version"], "digest": result["digest"], "created": True}


def test_tampered_model_is_not_registered(registry, models, make_context, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(models["b"], copy)
    manifest = artifacts.read_manifest(str(copy))
    (copy / manifest.file("model/model.skops").path).write_bytes(b"not a model")
    with pytest.raises(artifacts.ArtifactCorruptError):
        register(str(copy), make_context())
    assert registry.search_model_versions("name = 'cancer'") == []


def test_invalid_name_and_missing_registry_fail_clearly(models, make_context, monkeypatch):
    op = RegisterModelOperator(task_id="r", model_uri=models["a"], model_name="bad name!", mlflow_conn_id="none")
    with pytest.raises(AirflowFailException, match="is not valid"):
        op.execute(make_context())
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    op = RegisterModelOperator(task_id="r", model_uri=models["a"], model_name="cancer", mlflow_conn_id="missing")
    with pytest.raises(AirflowException, match="No MLflow registry configured"):
        op.execute(make_context())


def test_a_failed_deploy_puts_the_aliases_back_unless_moved_again_since(registry, models, make_context):
    from operators.registry.promote_model import PromoteModelOperator, RestoreAliasesOperator

    register(models["a"], make_context(run_id="run-a"))
    register(models["b"], make_context(run_id="run-b"))

    def promote(version: str, aliases) -> dict:
        return PromoteModelOperator(task_id="promote", model_name="cancer", version=version, aliases=aliases,
                                    mlflow_conn_id="mlflow_test").execute(make_context())

    def restore(moved: dict) -> dict:
        ti = FakeTaskInstance()
        ti.xcoms[("promote", "return_value")] = moved
        return RestoreAliasesOperator(task_id="restore_aliases", model_name="cancer",
                                      mlflow_conn_id="mlflow_test").execute({**make_context(), "ti": ti})

    def holder(alias: str) -> str | None:
        try:
            return str(registry.get_model_version_by_alias("cancer", alias).version)
        except Exception:
            return None

    promote("1", ["production"])
    moved = promote("2", ["production", "shadow"])  # production 1 -> 2, shadow unset -> 2
    assert moved == {"production": {"from": "1", "to": "2"}, "shadow": {"from": None, "to": "2"}}
    assert restore(moved) == {"production": {"from": "2", "to": "1"}, "shadow": {"from": "2", "to": None}}
    assert holder("production") == "1" and holder("shadow") is None

    moved = promote("2", ["production"])
    registry.delete_registered_model_alias("cancer", "production")  # someone changed it since
    assert restore(moved) == {} and holder("production") is None  # left as they left it
    assert restore({}) == {}  # the promote moved nothing (e.g. it never ran)
