"""Deploy drills against a real server process and a real MLflow registry, each with Locust
load running (tests/load/): a new version (zero failed requests), a corrupt artifact (refused,
the old version serves), a model failing its smoke test (rolled back by itself, zero failed
requests), and a SIGKILL of the server (the errors are counted, the next deploy restarts it,
nothing is left corrupt)."""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import signal
import time

import pyarrow as pa
import pytest
from airflow.sdk.exceptions import AirflowException, AirflowFailException, TaskDeferred

from ml import artifacts, train
from operators.deploy.deploy_model import DeployModelOperator
from operators.deploy.targets.local import LocalServerTarget
from operators.registry.register_model import RegisterModelOperator
from tests.helpers import FakeTaskInstance, breast_cancer_table, write_snapshot
from tests.load.locust_load import LocustLoad


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    root = tmp_path_factory.mktemp("deploy")
    uri = f"sqlite:///{root}/mlflow.db"
    mp = pytest.MonkeyPatch()
    mp.setenv("ML_ARTIFACT_ROOT", f"file://{root}")  # where the managed server may hot-swap from
    mp.setenv("AIRFLOW_CONN_MLFLOW_DEFAULT", json.dumps({"conn_type": "generic", "extra": {"tracking_uri": uri}}))
    table = breast_cancer_table()
    write_snapshot(str(root / "snap"), table)
    shuffled = table.set_column(table.column_names.index("target"), "target",
                                pa.array([(i * 7) % 2 for i in range(table.num_rows)]))
    write_snapshot(str(root / "bad-snap"), shuffled)
    uris = {}
    for name, snap, seed in (("v1", "snap", 1), ("v2", "snap", 2), ("bad", "bad-snap", 3)):
        train.train(str(root / snap), str(root / name), train.parse_config(
            {"estimator": "HistGradientBoostingClassifier", "target": "target", "params": {"max_iter": 30},
             "seed": seed}))
        uris[name] = str(root / name)
    tampered = root / "tampered"  # registered intact, corrupted afterwards
    train.train(str(root / "snap"), str(tampered), train.parse_config(
        {"estimator": "HistGradientBoostingClassifier", "target": "target", "params": {"max_iter": 31}}))
    manifest = artifacts.read_manifest(str(tampered))
    uris["tampered"] = str(tampered)
    versions = {}
    for name in ("v1", "v2", "tampered", "bad"):
        ctx = {"dag": type("D", (), {"dag_id": "test"})(), "run_id": f"r-{name}", "outlet_events": {}}
        versions[name] = RegisterModelOperator(task_id="register", model_uri=uris[name], model_name="m").execute(ctx)[
            "version"]
    (tampered / manifest.file("model/model.skops").path).write_bytes(b"tampered after registration")
    target_dir = root / "endpoint"
    features = table.drop(["target"])
    yield {"versions": versions, "dir": str(target_dir), "root": root, "columns": features.column_names,
           "rows": [list(r.values()) for r in features.slice(0, 64).to_pylist()]}
    LocalServerTarget("it", state_dir=str(target_dir)).stop()
    mp.undo()


def deploy(registry, version, make_context, **kwargs):
    """Run DeployModelOperator as the task runner would: execute, the trigger, then verify."""
    op = DeployModelOperator(task_id="deploy", model_name="m", version=version, endpoint="it",
                             target_settings={"state_dir": registry["dir"]}, wait_timeout=60, **kwargs)
    context = make_context(run_id=f"deploy-{version}")
    context["ti"] = FakeTaskInstance()
    try:
        result = op.execute(context)
        return result, context["ti"]
    except TaskDeferred as deferred:
        event = asyncio.run(_first(deferred.trigger))
        return getattr(op, deferred.method_name)(context, event=event.payload), context["ti"]


async def _first(trigger):
    """Run the trigger as the triggerer does: rebuilt from its serialized (JSON) kwargs."""
    import importlib

    path, kwargs = trigger.serialize()
    module, _, name = path.rpartition(".")
    rebuilt = getattr(importlib.import_module(module), name)(**json.loads(json.dumps(kwargs)))
    async for event in rebuilt.run():
        return event


def serving(registry, name, make_context) -> LocalServerTarget:
    """The endpoint, serving version ``name`` (deployed now if something else serves)."""
    target = LocalServerTarget("it", state_dir=registry["dir"])
    current = target.current()
    if current is None or not current.live or current.version != registry["versions"][name]:
        deploy(registry, registry["versions"][name], make_context)
        target = LocalServerTarget("it", state_dir=registry["dir"])  # the port the deploy chose
    assert target.current().version == registry["versions"][name]
    return target


def load_on(registry, target, name: str) -> LocustLoad:
    """4 Locust users, unbounded in requests, stopped by the drill (2 minutes at most)."""
    return LocustLoad(target.url, registry["columns"], registry["rows"], registry["root"] / f"load-{name}", users=4,
                      seconds=120, max_requests=0, batch_rows=8).start()


def answered_by(target) -> str:
    conn = http.client.HTTPConnection(*target.url.removeprefix("http://").split(":"), timeout=10)
    conn.request("POST", "/invocations", json.dumps({"instances": [[0.0] * 30]}), {"Content-Type": "application/json"})
    return json.loads(conn.getresponse().read())["model_version"]


def test_drill_deploy_a_new_version_under_load(registry, make_context):
    versions = registry["versions"]
    target = serving(registry, "v1", make_context)
    with load_on(registry, target, "new-version") as load:
        time.sleep(1.0)
        result, ti = deploy(registry, versions["v2"], make_context)
        time.sleep(1.0)
        report = load.stop()
    assert report["failures"] == {} and report["valid"] > 200
    assert set(report["versions"]) == {versions["v1"], versions["v2"]}
    assert result["version"] == versions["v2"] and result["previous_version"] == versions["v1"]
    assert ti.xcom_pull(key="ledger")["outcome"] == "serving"
    assert ti.xcom_pull(key="ledger")["previous_version"] == versions["v1"]
    assert answered_by(target) == versions["v2"]


def test_drill_a_corrupt_artifact_is_refused_and_the_old_version_serves(registry, make_context):
    versions = registry["versions"]
    target = serving(registry, "v2", make_context)
    with load_on(registry, target, "corrupt") as load:
        time.sleep(0.5)
        with pytest.raises(AirflowFailException, match="deploy refused, " + versions["v2"] + " still serves"):
            deploy(registry, versions["tampered"], make_context)
        time.sleep(0.5)
        report = load.stop()
    assert report["failures"] == {} and report["valid"] > 100
    assert set(report["versions"]) == {versions["v2"]}
    assert target.current().version == versions["v2"] and answered_by(target) == versions["v2"]


def test_drill_a_model_failing_its_smoke_test_is_rolled_back_with_zero_failed_requests(registry, make_context):
    versions = registry["versions"]
    target = serving(registry, "v2", make_context)
    with load_on(registry, target, "smoke") as load:
        time.sleep(0.5)
        with pytest.raises(AirflowException, match="smoke test failed: accuracy .* is below 0.8") as failure:
            deploy(registry, versions["bad"], make_context, min_smoke_accuracy=0.8)
        time.sleep(0.5)
        report = load.stop()
    assert f"rolled back to {versions['v2']}" in str(failure.value)
    assert report["failures"] == {} and report["valid"] > 100
    assert versions["v2"] in report["versions"] and set(report["versions"]) <= {versions["v2"], versions["bad"]}
    assert target.current().version == versions["v2"] and answered_by(target) == versions["v2"]


def test_drill_sigkill_of_the_server_is_counted_and_the_next_deploy_recovers(registry, make_context):
    versions = registry["versions"]
    target = serving(registry, "v2", make_context)
    state = json.loads((target.dir / "state.json").read_text())
    with load_on(registry, target, "sigkill") as load:
        time.sleep(0.5)
        os.kill(state["pid"], signal.SIGKILL)
        time.sleep(1.0)  # the load meets a dead port
        result, ti = deploy(registry, versions["v1"], make_context)
        time.sleep(1.0)
        report = load.stop()
    assert report["failures"], "the load never noticed the killed server"
    assert all(reason.startswith("connection: ") for reason in report["failures"]), report["failures"]
    assert versions["v1"] in report["versions"]  # answered again after the recovery
    assert result["version"] == versions["v1"] and result["previous_version"] == versions["v2"]
    after = json.loads((target.dir / "state.json").read_text())  # whole JSON, a live pid, the version served
    assert after["pid"] != state["pid"] and os.path.exists(f"/proc/{after['pid']}")
    assert after["served"]["version"] == versions["v1"]
    assert ti.xcom_pull(key="ledger")["outcome"] == "serving"
    assert artifacts.open_verified(after["served"]["uri"]).digest  # the artifact is intact
    assert answered_by(target) == versions["v1"]


def test_a_local_start_is_waited_for_in_the_task_unless_told_to_defer(registry, make_context, tmp_path):
    """A server starts in seconds: the deploy waits for it in the task (no triggerer round trip);
    with ``wait_in_task=0`` it defers at once, as a rollout of minutes does."""
    version = registry["versions"]["v1"]
    by_default = DeployModelOperator(task_id="d", model_name="m", version=version, endpoint="e", wait_timeout=60)
    assert by_default._seconds_in_task(LocalServerTarget) == LocalServerTarget.wait_in_task > 0
    assert DeployModelOperator(task_id="d", model_name="m", version=version, endpoint="e",
                               wait_timeout=5)._seconds_in_task(LocalServerTarget) == 5  # never past the whole wait
    # the wait is explicit here: a cold start under coverage on two busy CI cores took over 10 s
    for name, wait_in_task in (("defers", 0), ("waits", 120)):
        state_dir = tmp_path / name
        op = DeployModelOperator(task_id="deploy", model_name="m", version=version, endpoint=name,
                                 target_settings={"state_dir": str(state_dir)}, wait_timeout=180,
                                 wait_in_task=wait_in_task)
        context = make_context(run_id=f"start-{name}")
        context["ti"] = FakeTaskInstance()
        try:
            if wait_in_task == 0:
                with pytest.raises(TaskDeferred) as deferred:
                    op.execute(context)
                assert type(deferred.value.trigger).__name__ == "DeployStatusTrigger"
                assert context["ti"].xcom_pull(key="in_flight")["handle"]["version"] == version
            else:
                result = op.execute(context)
                assert result["version"] == version and result["previous_version"] is None
                assert context["ti"].xcom_pull(key="in_flight") is None  # never deferred
                assert context["ti"].xcom_pull(key="ledger")["outcome"] == "serving"
        finally:
            LocalServerTarget(name, state_dir=str(state_dir)).stop()
