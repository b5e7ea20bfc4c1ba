"""The SageMaker target against moto's server mode (real boto3 over HTTP through the amazon
provider's hooks). moto 5.2.5 lacks UpdateEndpoint and answers InvokeEndpoint with canned text:
those two calls, and only those, are substituted (tests/cloud_standins.py), the invoke by a real
ml.serve started the SageMaker way from the uploaded model.tar.gz."""

from __future__ import annotations

import asyncio
import io
import json
import tarfile

import boto3
import pytest

from ml import artifacts
from operators.deploy.targets import DeployRefusedError, Served, get_target, target_from_handle
from operators.deploy.targets.model_package import model_tarball
from operators.deploy.targets.sagemaker import SageMakerSpec, SageMakerTarget, endpoint_status
from tests.cloud_standins import SageMakerStandIn
from tests.helpers import FakeTaskInstance, breast_cancer_table, two_versions

ROLE = "arn:aws:iam::123456789012:role/ml-serving"
IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/ml-serving:0.1.0"


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return two_versions(tmp_path_factory.mktemp("sm-models"))


@pytest.fixture
def aws(s3_bucket, moto_s3, monkeypatch, tmp_path):
    stand_in = SageMakerStandIn(monkeypatch, tmp_path)
    monkeypatch.setenv("AIRFLOW_CONN_ML_ENDPOINT_SM", json.dumps({"conn_type": "generic", "extra": {
        "target": "sagemaker", "image": IMAGE, "role_arn": ROLE, "model_data_prefix": f"s3://{s3_bucket}/models",
        "region_name": "us-east-1", "instance_type": "ml.c5.large"}}))
    yield stand_in
    stand_in.close()


def sagemaker():
    return boto3.client("sagemaker", region_name="us-east-1")


def test_the_tarball_is_the_verified_artifact_byte_for_byte_the_same_each_time(models, tmp_path):
    first, manifest = model_tarball(models["v1"].uri)
    second, _ = model_tarball(models["v1"].uri)
    data = first.read()
    assert data == second.read()
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        tar.extractall(tmp_path / "opt-ml-model", filter="data")
    assert artifacts.open_verified(str(tmp_path / "opt-ml-model"), kind="model").digest == manifest.digest
    tampered = tmp_path / "tampered"
    import shutil

    shutil.copytree(models["v1"].uri, tampered)
    (tampered / manifest.file("model/model.skops").path).write_bytes(b"not the model")
    with pytest.raises(artifacts.ArtifactCorruptError):
        model_tarball(str(tampered))


def test_create_then_update_with_blue_green_then_smoke_test_through_invoke_endpoint(models, aws, s3_bucket):
    target = get_target(None, "churn", "ml_endpoint_sm", {"traffic_routing": "canary", "canary_percent": 20,
                                                          "rollback_alarms": ["churn-5xx"]})
    assert isinstance(target, SageMakerTarget) and target.current() is None
    first = target.deploy(models["v1"])
    assert first["facts"]["action"] == "CreateEndpoint" and first["previous_config"] is None
    model = sagemaker().describe_model(ModelName=first["facts"]["model"])
    assert model["PrimaryContainer"]["Image"] == IMAGE and model["ExecutionRoleArn"] == ROLE
    assert model["PrimaryContainer"]["Environment"] == {"ML_SERVE_MODEL_VERSION": "1",
                                                        "ML_MODEL_SOURCE_URI": models["v1"].uri}
    data_url = model["PrimaryContainer"]["ModelDataUrl"]
    assert data_url.startswith(f"s3://{s3_bucket}/models/ml-churn/v1-") and data_url.endswith("/model.tar.gz")
    config = sagemaker().describe_endpoint_config(EndpointConfigName=first["endpoint_config"])
    assert config["ProductionVariants"][0]["InstanceType"] == "ml.c5.large"
    assert asyncio.run(SageMakerTarget.status(json.loads(json.dumps(first)))).state == "serving"
    assert target.current() == Served("1", models["v1"].uri)

    second = target.deploy(models["v2"])
    assert second["facts"]["action"] == "UpdateEndpoint" and second["previous_config"] == first["endpoint_config"]
    assert second["endpoint_config"] != first["endpoint_config"]  # a new config per version
    (update,) = aws.updates
    assert update["EndpointConfigName"] == second["endpoint_config"]
    assert update["DeploymentConfig"] == {
        "BlueGreenUpdatePolicy": {"TrafficRoutingConfiguration": {
            "Type": "CANARY", "WaitIntervalInSeconds": 300, "CanarySize": {"Type": "CAPACITY_PERCENT", "Value": 20}},
            "TerminationWaitInSeconds": 0},
        "AutoRollbackConfiguration": {"Alarms": [{"AlarmName": "churn-5xx"}]}}
    rebuilt = target_from_handle(json.loads(json.dumps(second)))
    rows = breast_cancer_table().drop(["target"]).slice(0, 4).to_pylist()
    answer = rebuilt.invoke(rows)
    assert answer["model_version"] == "2" and len(answer["predictions"]) == 4
    assert json.loads(aws.invocations[-1]["body"]) == {"instances": rows}  # as InvokeEndpoint carried it


def test_a_failed_update_back_in_service_on_the_old_config_is_a_failure_not_success(models, aws):
    target = get_target("sagemaker", "churn", "ml_endpoint_sm")
    first = target.deploy(models["v1"])
    aws.update_outcome = "failed"
    second = target.deploy(models["v2"])
    described = sagemaker().describe_endpoint(EndpointName=second["endpoint_name"])
    assert described["EndpointStatus"] == "InService"  # what a status-only waiter takes for success
    status = asyncio.run(SageMakerTarget.status(second))
    assert status.state == "failed" and first["endpoint_config"] in status.reason and "ping health check" in status.reason
    # the rollback sees the endpoint already on the previous config: nothing to undo
    assert target_from_handle(second).rollback(models["v1"])["action"].startswith("none")


def test_rollback_updates_back_to_the_previous_config(models, aws):
    target = get_target("sagemaker", "churn", "ml_endpoint_sm")
    first = target.deploy(models["v1"])
    second = target.deploy(models["v2"])
    done = target_from_handle(second).rollback(models["v1"])
    assert done["endpoint_config"] == first["endpoint_config"]
    assert aws.updates[-1] == {"EndpointName": "ml-churn", "EndpointConfigName": first["endpoint_config"]}
    assert target.current() == Served("1", models["v1"].uri)


def test_deploying_while_an_update_runs_is_refused_and_the_state_is_progressing(models, aws):
    target = get_target("sagemaker", "churn", "ml_endpoint_sm")
    target.deploy(models["v1"])
    aws.update_outcome = "updating"
    second = target.deploy(models["v2"])
    assert asyncio.run(SageMakerTarget.status(second)).state == "progressing"
    with pytest.raises(DeployRefusedError, match="Updating"):
        target.deploy(models["v1"])


def test_the_deploy_operator_rolls_back_a_version_that_fails_its_smoke_test(models, aws, make_context, tmp_path):
    """DeployModelOperator on SageMaker: v2 reaches InService on its config but answers no
    predictions; the smoke test fails and UpdateEndpoint puts v1's config back."""
    from unittest import mock

    from airflow.sdk.exceptions import AirflowException

    from operators.deploy.deploy_model import DeployModelOperator

    target = get_target("sagemaker", "churn", "ml_endpoint_sm")
    target.deploy(models["v1"])
    op = DeployModelOperator(task_id="deploy", model_name="churn", version="2", endpoint="churn",
                             target_conn_id="ml_endpoint_sm", wait_timeout=30)
    context = make_context(run_id="deploy-2")
    context["ti"] = FakeTaskInstance()
    broken_invoke = mock.patch.object(SageMakerTarget, "invoke", return_value={"predictions": [], "model_version": "2"})
    with mock.patch.object(DeployModelOperator, "_resolve", return_value=mock.Mock(version="2", source=models["v2"].uri)), \
            broken_invoke:
        with pytest.raises(AirflowException, match="rolled back to 1: smoke test failed: 0 predictions"):
            op.execute(context)
    ledger = context["ti"].xcom_pull(key="ledger")
    assert ledger["outcome"] == "rolled_back" and ledger["failed_version"] == "2"
    assert target.current() == Served("1", models["v1"].uri)


def test_endpoint_status_reads_describe_endpoint():
    assert endpoint_status({"EndpointStatus": "Creating"}, "c2", "2").state == "progressing"
    assert endpoint_status({"EndpointStatus": "RollingBack", "EndpointConfigName": "c1"}, "c2", "2").state == "progressing"
    assert endpoint_status({"EndpointStatus": "InService", "EndpointConfigName": "c2"}, "c2", "2").version == "2"
    failed = endpoint_status({"EndpointStatus": "Failed", "FailureReason": "no capacity"}, "c2", "2")
    assert failed.state == "failed" and "no capacity" in failed.reason


@pytest.mark.parametrize("settings,message", [
    ({"role_arn": ROLE, "model_data_prefix": "s3://b/p"}, "needs \\['image'\\]"),
    ({"image": IMAGE, "role_arn": ROLE, "model_data_prefix": "/local"}, "must be an s3:// URI"),
    ({"image": IMAGE, "role_arn": ROLE, "model_data_prefix": "s3://b", "traffic_routing": "sideways"}, "traffic_routing"),
    ({"image": IMAGE, "role_arn": ROLE, "model_data_prefix": "s3://b", "instance_typo": "x"}, "unknown SageMaker settings"),
])
def test_bad_settings_say_what_is_wrong(settings, message):
    with pytest.raises(ValueError, match=message):
        SageMakerSpec.from_settings(settings)


def test_a_canary_percent_asked_per_run_makes_the_update_a_blue_green_canary():
    target = SageMakerTarget("churn", settings={"canary_percent": 30}, conn_extras={
        "image": IMAGE, "role_arn": ROLE, "model_data_prefix": "s3://b/models", "traffic_routing": "all_at_once"})
    routing = target.spec.deployment_config()["BlueGreenUpdatePolicy"]["TrafficRoutingConfiguration"]
    assert routing["Type"] == "CANARY" and routing["CanarySize"] == {"Type": "CAPACITY_PERCENT", "Value": 30}


def test_the_local_target_refuses_a_canary_with_a_reason():
    with pytest.raises(ValueError, match="no canary"):
        get_target("local", "churn", None, {"canary_percent": 10})


def test_a_retried_deploy_reuses_what_the_first_try_made_and_uploads_nothing_twice(models, aws, s3_bucket):
    target = get_target("sagemaker", "churn", "ml_endpoint_sm")
    first = target.deploy(models["v1"])
    again = get_target("sagemaker", "churn", "ml_endpoint_sm")._ensure_config(target._hook(), models["v1"])
    assert again == (first["endpoint_config"], {"model": first["facts"]["model"],
                                                "endpoint_config": first["endpoint_config"], "reused": True})
    # a try that died after CreateModel, before CreateEndpointConfig: the Model and the tarball exist
    sagemaker().delete_endpoint_config(EndpointConfigName=first["endpoint_config"])
    key = first["facts"]["model_data"].split(f"s3://{s3_bucket}/", 1)[1]
    uploaded = boto3.client("s3").head_object(Bucket=s3_bucket, Key=key)["LastModified"]
    config_name, facts = target._ensure_config(target._hook(), models["v1"])
    assert config_name == first["endpoint_config"] and "reused" not in facts
    assert boto3.client("s3").head_object(Bucket=s3_bucket, Key=key)["LastModified"] == uploaded  # not re-sent
    assert sagemaker().describe_endpoint_config(EndpointConfigName=config_name)["ProductionVariants"][0][
        "ModelName"] == first["facts"]["model"]


def test_a_model_error_from_the_container_is_an_endpoint_error_with_its_status(models, aws):
    from operators.deploy.endpoint_client import EndpointError

    target = get_target("sagemaker", "churn", "ml_endpoint_sm")
    target.deploy(models["v1"])
    with pytest.raises(EndpointError, match="InvokeEndpoint ml-churn: .*ModelError") as raised:
        target.invoke([[1.0, 2.0]])  # two values for a model of thirty features
    assert raised.value.status == 424


def test_a_rollback_of_an_endpoint_deleted_meanwhile_says_to_deploy_again(models, aws):
    target = get_target("sagemaker", "churn", "ml_endpoint_sm")
    target.deploy(models["v1"])
    second = target.deploy(models["v2"])
    sagemaker().delete_endpoint(EndpointName="ml-churn")
    with pytest.raises(RuntimeError, match="endpoint ml-churn no longer exists; deploy version 1 again"):
        target_from_handle(second).rollback(models["v1"])


def test_linear_traffic_shifting_and_bounds_of_the_shares():
    base = {"image": IMAGE, "role_arn": ROLE, "model_data_prefix": "s3://b/models"}
    spec = SageMakerSpec.from_settings({**base, "traffic_routing": "linear", "linear_step_percent": 25})
    routing = spec.deployment_config()["BlueGreenUpdatePolicy"]["TrafficRoutingConfiguration"]
    assert routing["Type"] == "LINEAR" and routing["LinearStepSize"] == {"Type": "CAPACITY_PERCENT", "Value": 25}
    assert SageMakerSpec.from_settings(base).deployment_config() is None  # all at once, no alarms: a plain update
    with pytest.raises(ValueError, match="canary_percent must be between 1 and 99, got 100"):
        SageMakerSpec.from_settings({**base, "traffic_routing": "canary", "canary_percent": 100})
