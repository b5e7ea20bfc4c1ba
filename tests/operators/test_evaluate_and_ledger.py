"""Champion/challenger decisions, evaluation recorded in a real MLflow registry, ledger logic."""

from __future__ import annotations

import json

import pytest

from ml import train
from operators.deploy.ledger import version_before_current
from operators.training.evaluate_model import EvaluateModelOperator, decide
from operators.registry.register_model import RegisterModelOperator
from tests.helpers import breast_cancer_table, write_snapshot


@pytest.mark.parametrize("candidate,champion,direction,margin,promote", [
    (0.90, None, "maximize", 0.5, True),     # the first model bootstraps the alias
    (0.95, 0.90, "maximize", 0.02, True),
    (0.91, 0.90, "maximize", 0.02, False),
    (0.90, 0.95, "maximize", 0.0, False),
    (10.0, 12.0, "minimize", 1.0, True),     # e.g. RMSE: lower is better
    (11.5, 12.0, "minimize", 1.0, False),
])
def test_decide(candidate, champion, direction, margin, promote):
    assert decide(candidate, champion, direction, margin)[0] is promote


def test_evaluate_scores_both_on_the_same_rows_and_records_them(tmp_path, monkeypatch, make_context):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("AIRFLOW_CONN_MLFLOW_DEFAULT", json.dumps({"conn_type": "generic", "extra": {"tracking_uri": uri}}))
    write_snapshot(str(tmp_path / "snap"), breast_cancer_table())
    versions = {}
    # same rows and split; the weak candidate sees one nearly useless feature
    for name, features in (("good", None), ("bad", ["mean_fractal_dimension"])):
        train.train(str(tmp_path / "snap"), str(tmp_path / name), train.parse_config(
            {"estimator": "LogisticRegression", "target": "target", "params": {"max_iter": 500},
             "features": features}))
        versions[name] = RegisterModelOperator(task_id="r", model_uri=str(tmp_path / name),
                                               model_name="m").execute(make_context())["version"]
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    first = EvaluateModelOperator(task_id="e", model_name="m", version=versions["good"]).execute(make_context())
    assert first["promote"] and first["champion"] is None and "bootstraps" in first["reason"]
    client.set_registered_model_alias("m", "production", versions["good"])
    verdict = EvaluateModelOperator(task_id="e", model_name="m", version=versions["bad"], margin=0.01).execute(
        make_context())
    assert not verdict["promote"]
    assert verdict["champion"]["version"] == versions["good"]
    assert verdict["champion"]["accuracy"] > verdict["candidate"]["accuracy"] + 0.2
    tags = client.get_model_version("m", versions["bad"]).tags
    assert tags["eval.decision"] == "keep" and tags["eval.champion_version"] == versions["good"]
    assert float(tags["eval.champion.accuracy"]) == pytest.approx(verdict["champion"]["accuracy"], abs=1e-6)
    again = EvaluateModelOperator(task_id="e", model_name="m", version=versions["good"]).execute(make_context())
    assert not again["promote"] and "already holds" in again["reason"]


    from airflow.sdk.exceptions import AirflowFailException

    from ml.model_io import load_verified_model, read_holdout

    with pytest.raises(AirflowFailException, match=r"direction must be one of .*got 'up'"):
        EvaluateModelOperator(task_id="e", model_name="m", version=versions["bad"], direction="up").execute(
            make_context())
    with pytest.raises(AirflowFailException, match=r"metric 'rmse' is not computed for this model; choose one of \["):
        EvaluateModelOperator(task_id="e", model_name="m", version=versions["bad"], metric="rmse").execute(
            make_context())
    # a champion trained on a column the candidate's snapshot no longer has cannot be compared on its rows
    manifest, model = load_verified_model(str(tmp_path / "good"))
    holdout = read_holdout(manifest).drop(["mean_radius"])
    with pytest.raises(AirflowFailException, match=r"needs features \['mean_radius'\] that the held-out rows lack"):
        EvaluateModelOperator._score(manifest, model, holdout, "target")


def test_version_before_current_reads_the_ledger():
    ledger = [
        {"outcome": "serving", "version": "1", "previous_version": None},
        {"outcome": "serving", "version": "2", "previous_version": "1"},
        {"outcome": "refused", "version": "3", "previous_version": "2"},
    ]
    assert version_before_current(ledger) == "1"
    ledger.append({"outcome": "serving", "version": "3", "previous_version": "2"})
    assert version_before_current(ledger) == "2"
    ledger.append({"outcome": "rolled_back", "version": "2", "previous_version": "4", "failed_version": "4"})
    assert version_before_current(ledger) == "1"  # v2 serves again; before v2 came v1
    assert version_before_current([]) is None


def _watcher_run(states: dict, ledger: dict | None):
    from types import SimpleNamespace

    from airflow.sdk.exceptions import AirflowFailException

    from operators.deploy.ledger import FailIfUpstreamFailedOperator

    ti = SimpleNamespace(get_task_states=lambda dag_id, run_ids: {run_ids[0]: states},
                         xcom_pull=lambda task_ids, key: ledger)
    context = {"ti": ti, "run_id": "r1", "dag": SimpleNamespace(dag_id="ml_training_pipeline")}
    with pytest.raises(AirflowFailException) as failed:
        FailIfUpstreamFailedOperator(task_id="fail_if_deploy_failed").execute(context)
    return str(failed.value)


def test_the_watcher_names_the_task_that_really_failed():
    # extract failed: the deploy never ran, and the message says so instead of blaming it
    message = _watcher_run({"extract": "failed", "train": "upstream_failed", "deploy": "upstream_failed",
                            "fail_if_deploy_failed": "running"}, None)
    assert "['extract']" in message and "'deploy' never ran" in message
    # the deploy itself failed: its ledger outcome and reason are in the message
    message = _watcher_run({"extract": "success", "deploy": "failed"},
                           {"outcome": "rolled_back", "reason": "automatic rollback: smoke test failed"})
    assert "task 'deploy' failed (rolled_back: automatic rollback: smoke test failed)" in message
