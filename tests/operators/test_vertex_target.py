"""The Vertex AI target through the google provider's hooks against a gRPC stand-in of Vertex's
services (tests/cloud_standins.py): upload, deploy with a traffic split, promote, undeploy and
roll back, each request asserted field by field as the server received it; predictions come
from a real ml.serve run with Vertex's AIP_* environment, its model read from the GCS emulator."""

from __future__ import annotations

import asyncio
import json

import pytest

from ml import artifacts
from operators.deploy.targets import DeployRefusedError, Served, get_target, target_from_handle
from operators.deploy.targets.vertex import VertexSpec, VertexTarget
from tests.cloud_standins import VertexStandIn
from tests.helpers import FakeTaskInstance, breast_cancer_table, two_versions

IMAGE = "europe-west4-docker.pkg.dev/ml-project/ml/ml-serving:0.1.0"


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return two_versions(tmp_path_factory.mktemp("vertex-models"))


@pytest.fixture
def vertex(gcs_fs, gcs_emulator, monkeypatch, tmp_path):
    stand_in = VertexStandIn(monkeypatch, tmp_path)
    # the connection the hooks read (project); no key: the stand-in's clients need no credentials
    monkeypatch.setenv("AIRFLOW_CONN_GOOGLE_CLOUD_DEFAULT", json.dumps({
        "conn_type": "google_cloud_platform", "extra": {"project": VertexStandIn.PROJECT}}))
    monkeypatch.setenv("AIRFLOW_CONN_ML_ENDPOINT_VERTEX", json.dumps({"conn_type": "generic", "extra": {
        "target": "vertex", "project_id": VertexStandIn.PROJECT, "region": VertexStandIn.REGION,
        "endpoint_id": VertexStandIn.ENDPOINT_ID, "image": IMAGE,
        "staging_uri": f"gs://{gcs_emulator.bucket}/vertex-staging/{tmp_path.name}"}}))
    yield stand_in
    stand_in.close()


def calls(stand_in, name):
    return [request for method, request in stand_in.requests if method == name]


def test_first_deploy_uploads_the_staged_artifact_with_our_image_and_takes_all_traffic(models, vertex, gcs_emulator):
    target = get_target(None, "churn", "ml_endpoint_vertex")
    assert isinstance(target, VertexTarget) and target.current() is None
    handle = target.deploy(models["v1"])
    (upload,) = calls(vertex, "UploadModel")
    assert upload.parent == f"projects/{vertex.PROJECT}/locations/{vertex.REGION}"
    staged = upload.model.artifact_uri
    assert staged.startswith(f"gs://{gcs_emulator.bucket}/vertex-staging/")
    assert artifacts.open_verified(staged, kind="model").digest == artifacts.read_manifest(models["v1"].uri).digest
    spec = upload.model.container_spec
    assert spec.image_uri == IMAGE and [p.container_port for p in spec.ports] == [8080]
    assert {e.name: e.value for e in spec.env} == {"ML_SERVE_MODEL_VERSION": "1",
                                                   "ML_MODEL_SOURCE_URI": models["v1"].uri}
    assert upload.model.labels["ml-model-version"] == "1"
    (deploy,) = calls(vertex, "DeployModel")
    assert deploy.endpoint == vertex.endpoint_name and deploy.deployed_model.model == handle["model"]
    assert deploy.deployed_model.dedicated_resources.machine_spec.machine_type == "n1-standard-2"
    assert deploy.deployed_model.dedicated_resources.min_replica_count == 1
    assert dict(deploy.traffic_split) == {"0": 100}
    assert asyncio.run(VertexTarget.status(json.loads(json.dumps(handle)))).state == "serving"
    answer = target_from_handle(handle).invoke(breast_cancer_table().drop(["target"]).slice(0, 3).to_pylist())
    assert answer["model_version"] == "1" and len(answer["predictions"]) == 3
    assert target.current() == Served("1", models["v1"].uri)


def test_a_canary_takes_its_percent_then_is_promoted_and_the_old_model_undeployed(models, vertex):
    target = get_target("vertex", "churn", "ml_endpoint_vertex", {"canary_percent": 25})
    first = target.deploy(models["v1"])
    assert dict(calls(vertex, "DeployModel")[0].traffic_split) == {"0": 100}  # nothing to split with yet
    old_id = vertex.endpoint.deployed_models[0].id
    second = target.deploy(models["v2"])
    assert dict(calls(vertex, "DeployModel")[1].traffic_split) == {"0": 25, old_id: 75}
    assert second["previous_deployed_model"] == old_id and second["canary_percent"] == 25
    rebuilt = target_from_handle(json.loads(json.dumps(second)))
    rows = breast_cancer_table().drop(["target"]).slice(0, 3).to_pylist()
    assert rebuilt.invoke(rows)["model_version"] == "2"  # asked until the canary answered
    rebuilt.confirm(Served("2", models["v2"].uri))
    new_id = next(d.id for d in vertex.endpoint.deployed_models if d.model == second["model"])
    (update,) = calls(vertex, "UpdateEndpoint")
    assert dict(update.endpoint.traffic_split) == {new_id: 100} and list(update.update_mask.paths) == ["traffic_split"]
    assert update.endpoint.name == vertex.endpoint_name
    assert [u.deployed_model_id for u in calls(vertex, "UndeployModel")] == [old_id]
    assert [d.id for d in vertex.endpoint.deployed_models] == [new_id]
    assert first["model"] != second["model"]


def test_rollback_moves_traffic_back_and_undeploys_the_new_model(models, vertex):
    target = get_target("vertex", "churn", "ml_endpoint_vertex", {"canary_percent": 10})
    target.deploy(models["v1"])
    old_id = vertex.endpoint.deployed_models[0].id
    second = target.deploy(models["v2"])
    done = target_from_handle(second).rollback(models["v1"])
    new_id = done["undeployed"][0]
    assert dict(calls(vertex, "UpdateEndpoint")[-1].endpoint.traffic_split) == {old_id: 100}
    assert [u.deployed_model_id for u in calls(vertex, "UndeployModel")] == [new_id]
    assert dict(vertex.endpoint.traffic_split) == {old_id: 100}
    assert target.current() == Served("1", models["v1"].uri)


def test_status_follows_the_deploy_operation(models, vertex):
    target = get_target("vertex", "churn", "ml_endpoint_vertex")
    vertex.deploy_outcome = "running"
    running = target.deploy(models["v1"])
    assert asyncio.run(VertexTarget.status(running)).state == "progressing"
    vertex.deploy_outcome = "error"
    failed = target.deploy(models["v2"])
    status = asyncio.run(VertexTarget.status(failed))
    assert status.state == "failed" and "never became ready" in status.reason


def test_the_deploy_operator_rolls_back_a_canary_that_fails_its_smoke_test(models, vertex, make_context):
    from unittest import mock

    from airflow.sdk.exceptions import AirflowException

    from operators.deploy.deploy_model import DeployModelOperator

    get_target("vertex", "churn", "ml_endpoint_vertex").deploy(models["v1"])
    old_id = vertex.endpoint.deployed_models[0].id
    op = DeployModelOperator(task_id="deploy", model_name="churn", version="2", endpoint="churn",
                             target_conn_id="ml_endpoint_vertex", canary_percent="20",  # as a Param renders
                             min_smoke_accuracy=1.01, wait_timeout=30)  # no model reaches 101 %
    context = make_context(run_id="deploy-2")
    context["ti"] = FakeTaskInstance()
    with mock.patch.object(DeployModelOperator, "_resolve", return_value=mock.Mock(version="2", source=models["v2"].uri)):
        with pytest.raises(AirflowException, match="rolled back to 1: smoke test failed: accuracy"):
            op.execute(context)
    assert sorted(calls(vertex, "DeployModel")[-1].traffic_split.values()) == [20, 80]  # the Param's canary
    assert dict(vertex.endpoint.traffic_split) == {old_id: 100}
    assert [d.id for d in vertex.endpoint.deployed_models] == [old_id]
    assert context["ti"].xcom_pull(key="ledger")["outcome"] == "rolled_back"


def test_a_local_artifact_without_staging_is_refused(models, vertex):
    target = get_target("vertex", "churn", "ml_endpoint_vertex", {"staging_uri": ""})
    with pytest.raises(DeployRefusedError, match="not in GCS and no staging_uri"):
        target.deploy(models["v1"])
    assert vertex.requests == []


@pytest.mark.parametrize("settings,message", [
    ({"endpoint_id": "1", "image": IMAGE}, "needs \\['project_id'\\]"),
    ({"project_id": "p", "endpoint_id": "1", "image": IMAGE, "canary_percent": 0}, "canary_percent"),
    ({"project_id": "p", "endpoint_id": "1", "image": IMAGE, "staging_uri": "s3://x"}, "gs://"),
])
def test_bad_settings_say_what_is_wrong(settings, message):
    with pytest.raises(ValueError, match=message):
        VertexSpec.from_settings(settings)


def test_rows_the_model_refuses_are_an_endpoint_error_with_the_status(models, vertex):
    from operators.deploy.endpoint_client import EndpointError

    target = get_target("vertex", "churn", "ml_endpoint_vertex")
    target.deploy(models["v1"])
    with pytest.raises(EndpointError, match="Vertex AI predict on endpoint .*row 0 has 2 values") as raised:
        target.invoke([[1.0, 2.0]])
    assert raised.value.status == 400


def test_a_deployed_model_that_lost_its_traffic_is_a_failed_deploy(models, vertex):
    target = get_target("vertex", "churn", "ml_endpoint_vertex")
    handle = target.deploy(models["v1"])
    vertex.endpoint.traffic_split = {}  # someone moved the traffic away by hand
    status = asyncio.run(VertexTarget.status(handle))
    assert status.state == "failed" and "is deployed but takes no traffic" in status.reason
    assert target.current() is None  # nothing takes traffic: nothing serves


def test_a_rollback_whose_previous_model_was_undeployed_meanwhile_says_to_deploy_again(models, vertex):
    target = get_target("vertex", "churn", "ml_endpoint_vertex", {"canary_percent": 10})
    target.deploy(models["v1"])
    second = target.deploy(models["v2"])
    old_id = second["previous_deployed_model"]
    vertex.endpoint.traffic_split = {k: v for k, v in vertex.endpoint.traffic_split.items() if k != old_id}
    kept = [d for d in vertex.endpoint.deployed_models if d.id != old_id]
    del vertex.endpoint.deployed_models[:]
    vertex.endpoint.deployed_models.extend(kept)
    with pytest.raises(RuntimeError, match="served version 1 is gone from endpoint .*deploy version 1 again"):
        target_from_handle(second).rollback(models["v1"])
