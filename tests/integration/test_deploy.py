"""Deploys against a real server process and a real MLflow registry: v1, then v2 while a load
generator runs (zero failed requests), then a tampered v3 (refused, v2 keeps serving) and a bad
v3 (fails its smoke test, rolled back to v2 by itself, the task fails with the reason)."""

from __future__ import annotations

import asyncio
import http.client
import json
import threading
import time

import pyarrow as pa
import pytest
from airflow.sdk.exceptions import AirflowException, AirflowFailException, TaskDeferred

from ml import artifacts, train
from operators.deploy_model import DeployModelOperator
from operators.deploy_targets.local import LocalServerTarget
from operators.register_model import RegisterModelOperator
from tests.helpers import FakeTaskInstance, breast_cancer_table, write_snapshot


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
    (tampered / manifest.file("model.skops").path).write_bytes(b"tampered after registration")
    target_dir = root / "endpoint"
    yield {"versions": versions, "dir": str(target_dir)}
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


class LoadGenerator(threading.Thread):
    """Keeps 4 connections busy with single-row requests; bounded by a deadline."""

    def __init__(self, url: str, row: list, seconds: float = 60):
        super().__init__(daemon=True)
        self.host, self.port = url.removeprefix("http://").split(":")
        self.body = json.dumps({"instances": [row]})
        self.deadline = time.monotonic() + seconds
        self.stop_flag = threading.Event()
        self.ok, self.failed, self.versions = 0, [], set()
        self.lock = threading.Lock()

    def run(self):
        workers = [threading.Thread(target=self._client, daemon=True) for _ in range(4)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()

    def _client(self):
        conn = http.client.HTTPConnection(self.host, int(self.port), timeout=10)
        while not self.stop_flag.is_set() and time.monotonic() < self.deadline:
            try:
                conn.request("POST", "/invocations", self.body, {"Content-Type": "application/json"})
                resp = conn.getresponse()
                payload = resp.read()
                with self.lock:
                    if resp.status == 200:
                        self.ok += 1
                        self.versions.add(json.loads(payload)["model_version"])
                    else:
                        self.failed.append((resp.status, payload[:200]))
            except OSError as exc:
                with self.lock:
                    self.failed.append(("connection", repr(exc)))
                conn.close()
                conn = http.client.HTTPConnection(self.host, int(self.port), timeout=10)


def test_deploy_swap_under_load_then_refuse_and_roll_back(registry, make_context):
    versions = registry["versions"]
    result, ti = deploy(registry, versions["v1"], make_context)
    assert result["version"] == versions["v1"] and result["previous_version"] is None
    target = LocalServerTarget("it", state_dir=registry["dir"])
    assert target.current().version == versions["v1"]

    manifest = artifacts.read_manifest(LocalServerTarget("it", state_dir=registry["dir"]).current().uri)
    row = [0.0] * len(manifest.schema)
    load = LoadGenerator(target.url, row)
    load.start()
    time.sleep(1.0)
    result, ti = deploy(registry, versions["v2"], make_context)
    time.sleep(1.0)
    load.stop_flag.set()
    load.join(timeout=30)
    assert load.failed == [] and load.ok > 100
    assert load.versions == {versions["v1"], versions["v2"]}
    assert result["seconds_to_serve"] < 5
    assert ti.xcom_pull(key="ledger")["outcome"] == "serving"
    assert ti.xcom_pull(key="ledger")["previous_version"] == versions["v1"]

    with pytest.raises(AirflowFailException, match="deploy refused, " + versions["v2"] + " still serves"):
        deploy(registry, versions["tampered"], make_context)
    assert target.current().version == versions["v2"]

    with pytest.raises(AirflowException, match="smoke test failed: accuracy .* is below 0.8") as failure:
        deploy(registry, versions["bad"], make_context, min_smoke_accuracy=0.8)
    assert f"rolled back to {versions['v2']}" in str(failure.value)
    conn = http.client.HTTPConnection(*target.url.removeprefix("http://").split(":"), timeout=10)
    conn.request("POST", "/invocations", json.dumps({"instances": [row]}), {"Content-Type": "application/json"})
    assert json.loads(conn.getresponse().read())["model_version"] == versions["v2"]
    assert target.current().version == versions["v2"]
