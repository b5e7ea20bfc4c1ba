"""ml_training_pipeline end to end with real parts: `airflow dags test`, a PostgreSQL source
(read over ADBC/COPY), a local artifact store, and an MLflow registry on PostgreSQL."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from ml import artifacts

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
LOGICAL_DATE = "2026-01-03T03:00:00+00:00"  # interval 01-02 03:00 .. 01-03 03:00: seed days 0 and 1
PARTITION = "interval=20260102T030000Z--20260103T030000Z"


@pytest.fixture(scope="module")
def pipeline_env(make_database, tmp_path_factory):
    home = tmp_path_factory.mktemp("airflow-home")
    source = make_database("mlp_it_source")
    registry = make_database("mlp_it_mlflow").replace("postgresql://", "postgresql+psycopg2://")
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW_CONN_ML_SOURCE": source.replace("postgresql://", "postgres://"),
        "AIRFLOW_CONN_MLFLOW_DEFAULT": json.dumps({"conn_type": "generic", "extra": {"tracking_uri": registry}}),
        "ML_ARTIFACT_ROOT": f"file://{home}/artifacts",
        "ML_MODEL_NAME": "it_classifier",
        "ML_ENDPOINT": "it-endpoint",
        "ML_ENDPOINTS_DIR": str(home / "endpoints"),
    }
    for _ in range(2):
        subprocess.run([sys.executable, "-m", "demo.seed_source", "--postgres", source], cwd=REPO, env=env,
                       check=True, capture_output=True)
    subprocess.run([str(BIN / "airflow"), "db", "migrate"], env=env, check=True, capture_output=True, timeout=300)
    yield {"env": env, "home": home, "source": source, "registry": registry}
    from operators.deploy.targets.local import LocalServerTarget

    LocalServerTarget("it-endpoint", state_dir=str(home / "endpoints" / "it-endpoint")).stop()


def dags_test(env: dict, home: Path, dag_id: str = "ml_training_pipeline", logical_date: str = LOGICAL_DATE,
              conf: str = "{}", state: str = "success") -> str:
    """``airflow dags test``'s log, once the run ended in ``state``."""
    proc = subprocess.run(
        [str(BIN / "airflow"), "dags", "test", dag_id, logical_date, "--conf", conf],
        env=env, capture_output=True, text=True, timeout=600,
    )
    log = proc.stdout + proc.stderr
    (home / "dags-test.log").write_text(log)
    assert f"state={state}" in log and (proc.returncode == 0 or state != "success"), log[-4000:]
    return log


def test_pipeline_extracts_trains_and_registers_once_per_model(pipeline_env):
    env, home = pipeline_env["env"], pipeline_env["home"]
    log = dags_test(env, home)
    assert "PostgresHook" in log  # the ADBC/COPY fast path was the one used

    snapshot = artifacts.open_verified(f"{home}/artifacts/snapshots/it_classifier/{PARTITION}", kind="snapshot")
    assert snapshot.row_count == 569 + 80
    assert snapshot.lineage["dag_id"] == "ml_training_pipeline"
    assert snapshot.lineage["data_interval_end"] == LOGICAL_DATE
    assert "event_time < '2026-01-03T03:00:00+00:00'" in snapshot.lineage["source_query"]

    model_uri = f"file://{home}/artifacts/models/it_classifier/{PARTITION}"
    model = artifacts.open_verified(model_uri, kind="model")
    assert model.lineage["snapshot_digest"] == snapshot.digest
    assert model.extra["n_train"] + model.extra["n_test"] == snapshot.row_count
    assert model.extra["metrics"]["roc_auc"] > 0.95

    client = MlflowClient(tracking_uri=pipeline_env["registry"])
    (version,) = client.search_model_versions("name = 'it_classifier'")
    assert version.tags["model_digest"] == model.digest
    assert version.tags["snapshot_digest"] == snapshot.digest
    assert version.tags["lineage.dag_id"] == "ml_training_pipeline"
    assert version.source == model_uri
    run_metrics = client.get_run(version.run_id).data.metrics
    assert {k: run_metrics[k] for k in model.extra["metrics"]} == pytest.approx(model.extra["metrics"])
    assert run_metrics["eval_candidate_accuracy"] == pytest.approx(model.extra["metrics"]["accuracy"])

    # New rows arrive after the interval; re-running the same interval must change nothing.
    subprocess.run([sys.executable, "-m", "demo.seed_source", "--postgres", pipeline_env["source"]], cwd=REPO,
                   env=env, check=True, capture_output=True)
    log = dags_test(env, home)
    assert "already registered" in log
    again = artifacts.open_verified(f"{home}/artifacts/snapshots/it_classifier/{PARTITION}", kind="snapshot")
    assert again.digest == snapshot.digest and again.row_count == snapshot.row_count
    partition_dir = home / "artifacts" / "snapshots" / "it_classifier" / PARTITION
    assert len([p for p in partition_dir.iterdir() if p.name.startswith("w-")]) == 1
    assert [v.version for v in client.search_model_versions("name = 'it_classifier'")] == [version.version]
    assert "already holds 'production'" in log and "Skipping tasks [('promote'" in log  # nothing new to deploy


def endpoint(home: Path):
    from operators.deploy.targets.local import LocalServerTarget

    target = LocalServerTarget("it-endpoint", state_dir=str(home / "endpoints" / "it-endpoint"))
    import urllib.request

    with urllib.request.urlopen(target.url + "/ping", timeout=5) as resp:
        return target, json.loads(resp.read())["model_version"]


def test_gate_keeps_a_worse_v2_then_ml_deploy_deploys_it_and_rolls_back_from_the_ledger(pipeline_env):
    env, home = pipeline_env["env"], pipeline_env["home"]
    client = MlflowClient(tracking_uri=pipeline_env["registry"])
    target, serving = endpoint(home)
    assert serving == "1" and client.get_model_version_by_alias("it_classifier", "production").version in (1, "1")

    log = dags_test(env, home, logical_date="2026-01-04T03:00:00+00:00")  # the next day's interval: new rows
    assert "Registered it_classifier version 2" in log
    # v2 scores lower than v1 on v2's held-out rows (deterministic data): the gate keeps v1 serving
    assert "-> keep: improves by -" in log and "Skipping tasks [('promote'" in log
    assert endpoint(home)[1] == "1"
    assert str(client.get_model_version_by_alias("it_classifier", "production").version) == "1"
    assert client.get_model_version("it_classifier", "2").tags["eval.decision"] == "keep"

    log = dags_test(env, home, dag_id="ml_deploy", logical_date="2026-02-01T00:00:00+00:00",
                    conf='{"action": "deploy", "model": "it_classifier", "version": "2"}')
    assert endpoint(home)[1] == "2"
    assert "Ledger: {" in log and "'previous_version': '1'" in log

    log = dags_test(env, home, dag_id="ml_deploy", logical_date="2026-02-02T00:00:00+00:00",
                    conf='{"action": "rollback", "model": "it_classifier"}')
    assert "rollback: the ledger says 1 served before the current version" in log
    assert endpoint(home)[1] == "1"


def test_a_deploy_that_fails_puts_the_production_alias_back(pipeline_env):
    """The gate promotes a new model's first version, the endpoint refuses it (nothing listens at
    its connection's port): the run fails, the version stays registered, and the production
    alias goes back to what it was (unset), so batch scoring never scores with a refused model."""
    import socket

    from mlflow.exceptions import MlflowException

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    env = {**pipeline_env["env"], "ML_MODEL_NAME": "it_refused", "ML_ENDPOINT": "it-refused",
           "AIRFLOW_CONN_ML_ENDPOINT": json.dumps({"conn_type": "http", "host": "127.0.0.1", "port": port,
                                                   "password": "token"})}
    log = dags_test(env, pipeline_env["home"], state="failed")
    assert "Alias it_refused@production: None -> 1" in log, log[-4000:]
    assert "Alias it_refused@production back to unset (version 1 failed to deploy)" in log, log[-4000:]
    client = MlflowClient(tracking_uri=pipeline_env["registry"])
    with pytest.raises(MlflowException):
        client.get_model_version_by_alias("it_refused", "production")
    assert [v.version for v in client.search_model_versions("name = 'it_refused'")] in (["1"], [1])


def test_a_scoring_day_without_rows_skips_its_run_instead_of_failing_it(pipeline_env):
    """Unpausing ml_batch_scoring starts its latest cron interval, which in a young source has
    no rows: the run succeeds with its tasks skipped, saying why, and writes nothing."""
    log = dags_test(pipeline_env["env"], pipeline_env["home"], dag_id="ml_batch_scoring",
                    logical_date="2026-11-30T04:00:00+00:00")
    assert "Skipping task" in log and "query returned no rows for interval=20261129T040000Z--20261130T040000Z" in log
    assert "new_state=success" not in log  # no task ran to success: plan, score and commit were skipped too
    assert not (pipeline_env["home"] / "artifacts" / "predictions").exists()
