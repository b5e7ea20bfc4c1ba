"""Registry drills on a real PostgreSQL-backed MLflow registry, each attempt in a process of its
own as Airflow runs a task try:

- the registry's database restarts in the middle of ``register`` (before the model version is
  written, and after it is written but before the task learns so): the attempt fails naming the
  database, the retry succeeds, and there is exactly one version of the model;
- pipeline runs register different models of one name at the same moment: each gets its own
  version, with its own source and digest, and no write is lost.
"""

from __future__ import annotations

import json
import multiprocessing
import threading
import time
from concurrent.futures import ProcessPoolExecutor

import psycopg2
import pytest

from ml import artifacts, train
from tests.conftest import ThrowawayPostgres
from tests.helpers import breast_cancer_table, write_snapshot

MODEL = "drilled"


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("registry-drills")
    write_snapshot(str(root / "snap"), breast_cancer_table())
    uris = []
    for seed in range(6):
        train.train(str(root / "snap"), str(root / f"m{seed}"), train.parse_config(
            {"estimator": "HistGradientBoostingClassifier", "target": "target", "params": {"max_iter": 10},
             "seed": seed}))
        uris.append(str(root / f"m{seed}"))
    return uris


def registry_connection(dsn: str) -> str:
    uri = dsn.replace("postgresql://", "postgresql+psycopg2://")
    return json.dumps({"conn_type": "generic", "extra": {"tracking_uri": uri}})


def attempt(model_uri: str, conn: str, run_id: str, start_at: float = 0.0, fault: str | None = None,
            cluster: ThrowawayPostgres | None = None) -> dict:
    """One task try of ``register`` in this (fresh) process. ``fault``: restart the database
    ``before`` or ``after`` the model version is written; it comes back 2 s later."""
    import os

    os.environ["AIRFLOW_CONN_MLFLOW_DRILL"] = conn
    from mlflow.tracking import MlflowClient

    from operators.registry.register_model import RegisterModelOperator

    if fault:
        real = MlflowClient.create_model_version

        def crash_the_database():
            cluster.stop("immediate")
            threading.Thread(target=lambda: (time.sleep(2), cluster.start())).start()

        def create_model_version(self, *args, **kwargs):
            if fault == "before":
                crash_the_database()
            version = real(self, *args, **kwargs)
            if fault == "after":
                crash_the_database()
            return version

        MlflowClient.create_model_version = create_model_version
    context = {"dag": type("Dag", (), {"dag_id": "ml_training_pipeline"})(), "run_id": run_id, "outlet_events": {}}
    time.sleep(max(0.0, start_at - time.time()))
    try:
        return RegisterModelOperator(task_id="register", model_uri=model_uri, model_name=MODEL,
                                     mlflow_conn_id="mlflow_drill").execute(context)
    except Exception as exc:  # what the task log would show
        import traceback

        return {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}


def wait_accepting(dsn: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            psycopg2.connect(dsn, connect_timeout=2).close()
            return
        except psycopg2.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def fresh_process():
    return ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))


@pytest.mark.parametrize("when", ["before", "after"])
def test_a_registry_database_restart_mid_register_is_retried_into_one_version(models, when):
    cluster = ThrowawayPostgres().start()
    try:
        conn = registry_connection(cluster.dsn)
        with fresh_process() as pool:
            first = pool.submit(attempt, models[0], conn, "run-1", fault=when, cluster=cluster).result(timeout=120)
        assert "error" in first, f"the restart did not reach the registration: {first}"
        assert "connection" in first["error"].lower() or "server" in first["error"].lower(), first["error"]
        wait_accepting(cluster.dsn)
        with fresh_process() as pool:  # the task's retry
            retry = pool.submit(attempt, models[0], conn, "run-1").result(timeout=120)
        assert "error" not in retry, retry
        assert retry["version"] == "1"
        assert retry["created"] is (when == "before")  # after: the retry finds the version the crash hid

        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=json.loads(conn)["extra"]["tracking_uri"])
        versions = client.search_model_versions(f"name = '{MODEL}'")
        assert [(str(v.version), v.source, v.tags["model_digest"]) for v in versions] == [
            ("1", models[0], artifacts.read_manifest(models[0]).digest)]
    finally:
        cluster.stop()


@pytest.mark.parametrize("backend", ["postgresql", "sqlite"])
def test_runs_registering_at_the_same_moment_get_distinct_versions_and_lose_nothing(models, backend, make_database,
                                                                                    tmp_path):
    """Round 1 on an empty registry (its schema is created by whichever run comes first), round 2
    on the registry round 1 left, with the processes already warm so that they truly overlap."""
    dsn = make_database("mlp_drill") if backend == "postgresql" else f"sqlite:///{tmp_path}/mlflow.db"
    conn = registry_connection(dsn)
    pools = [fresh_process() for _ in range(3)]
    results = []
    try:
        for round_models, delay in ((models[:3], 8), (models[3:], 1)):
            start_at = time.time() + delay  # every process is up (imports done) by then
            futures = [pool.submit(attempt, uri, conn, f"run-{len(results) + i}", start_at)
                       for i, (pool, uri) in enumerate(zip(pools, round_models))]
            results += [f.result(timeout=180) for f in futures]
    finally:
        for pool in pools:
            pool.shutdown()
    assert all("error" not in r for r in results), [r.get("traceback", r) for r in results]
    assert sorted(int(r["version"]) for r in results) == [1, 2, 3, 4, 5, 6]
    assert all(r["created"] for r in results)

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=json.loads(conn)["extra"]["tracking_uri"])
    registered = {str(v.version): v for v in client.search_model_versions(f"name = '{MODEL}'")}
    assert len(registered) == 6
    for i, (result, uri) in enumerate(zip(results, models)):
        version = registered[result["version"]]
        assert version.source == uri
        assert version.tags["model_digest"] == artifacts.read_manifest(uri).digest
        assert version.tags["lineage.run_id"] == f"run-{i}" and version.run_id == result["run_id"]
        assert client.get_run(version.run_id).data.metrics
