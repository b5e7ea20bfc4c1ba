"""TrainModelOperator: the same trainer command as a local subprocess and as a Kubernetes pod.

No cluster runs here: the pod is rendered by the cncf-kubernetes provider's own
``build_pod_request_obj`` and validated against the Kubernetes API schemas.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import kubernetes_validate
import pytest
from airflow.sdk.exceptions import AirflowFailException

from ml import artifacts
from operators.train_model import TrainModelOperator, trainer_command
from tests.helpers import breast_cancer_table, write_snapshot

CONFIG = {"estimator": "LogisticRegression", "target": "target", "params": {"max_iter": 500}}
K8S = {
    "image": "registry.example/ml-trainer:0.1.0",
    "namespace": "ml",
    "cpu": 2,  # native Jinja rendering turns "2" into an int: the operator must cope
    "memory": "4Gi",
    "gpu": 1,
    "node_selector": {"cloud.google.com/gke-accelerator": "nvidia-l4"},
    "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
    "service_account_name": "trainer",
    "env_from_secrets": ["ml-storage-credentials"],
    "env": {"ML_CODE_VERSION": "0.1.0"},
}


@pytest.fixture
def snapshot(tmp_path):
    uri = str(tmp_path / "snap")
    write_snapshot(uri, breast_cancer_table())
    return uri


def test_local_compute_runs_the_trainer_and_returns_its_result(snapshot, tmp_path, make_context):
    op = TrainModelOperator(task_id="train", data_uri=snapshot, output_uri=str(tmp_path / "model"), config=CONFIG)
    result = op.execute(make_context(run_id="manual__local"))
    manifest = artifacts.open_verified(str(tmp_path / "model"), kind="model")
    assert result["digest"] == manifest.digest and result["metrics"]["accuracy"] > 0.9
    assert manifest.lineage["run_id"] == "manual__local" and manifest.lineage["task_id"] == "train"
    assert manifest.lineage["code_version"]


def test_local_bad_config_fails_without_retry_and_says_why(snapshot, tmp_path, make_context):
    op = TrainModelOperator(task_id="train", data_uri=snapshot, output_uri=str(tmp_path / "model"),
                            config=json.dumps({**CONFIG, "estimator": "SVC"}))
    with pytest.raises(AirflowFailException, match="trainer exited with code 2: ml.train: error: estimator 'SVC'"):
        op.execute(make_context())


def test_unknown_compute_and_kubernetes_settings_are_refused(snapshot, make_context):
    with pytest.raises(ValueError, match="unknown kubernetes settings"):
        TrainModelOperator(task_id="t", data_uri=snapshot, output_uri="/o", config=CONFIG, kubernetes={"cpus": 2})
    op = TrainModelOperator(task_id="t", data_uri=snapshot, output_uri="/o", config=CONFIG, compute="spark")
    with pytest.raises(AirflowFailException, match="compute must be one of"):
        op.execute(make_context())


def pod_context(make_context):
    context = make_context(run_id="scheduled__2026-01-02T03:00:00+00:00", dag_id="ml_training_pipeline")
    context["ti"] = SimpleNamespace(dag_id="ml_training_pipeline", task_id="train", map_index=-1, try_number=1)
    return context


def render_pod(make_context, **kwargs):
    from kubernetes.client import ApiClient

    op = TrainModelOperator(task_id="train", data_uri="s3://ml/snapshots/x/interval=1",
                            output_uri="s3://ml/models/x/interval=1", config=CONFIG, compute="kubernetes", **kwargs)
    context = pod_context(make_context)
    command = op.command(context)
    pod = op.pod_operator(command).build_pod_request_obj(context, dry_run=True)
    return command, ApiClient().sanitize_for_serialization(pod)


def test_pod_runs_the_same_command_with_resources_placement_and_secrets(make_context):
    command, pod = render_pod(make_context, kubernetes=K8S)
    spec = pod["spec"]
    (trainer,) = [c for c in spec["containers"] if c["name"] == "base"]
    assert trainer["command"] + trainer["args"] == command
    assert command[:3] == ["python", "-m", "ml.train"] and command == trainer_command(
        "s3://ml/snapshots/x/interval=1", "s3://ml/models/x/interval=1", CONFIG, json.loads(command[-1]))
    assert trainer["image"] == K8S["image"]
    assert trainer["resources"] == {"requests": {"cpu": "2", "memory": "4Gi"},
                                    "limits": {"cpu": "2", "memory": "4Gi", "nvidia.com/gpu": "1"}}
    assert spec["nodeSelector"] == K8S["node_selector"]
    assert spec["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert spec["serviceAccountName"] == "trainer"
    assert trainer["envFrom"] == [{"secretRef": {"name": "ml-storage-credentials"}}]
    assert {"name": "ML_CODE_VERSION", "value": "0.1.0"} in trainer["env"]
    assert pod["metadata"]["namespace"] == "ml"
    assert pod["metadata"]["labels"]["app.kubernetes.io/component"] == "trainer"
    assert any(c["name"] == "airflow-xcom-sidecar" for c in spec["containers"])  # XCom return via return.json
    assert any(m["mountPath"] == "/airflow/xcom" for m in trainer["volumeMounts"])
    assert kubernetes_validate.validate(pod, kubernetes_validate.latest_version(), strict=True) is not None


def test_minimal_pod_without_gpu_validates(make_context):
    _, pod = render_pod(make_context, kubernetes={"image": "ml-trainer:0.1.0"})
    (trainer,) = [c for c in pod["spec"]["containers"] if c["name"] == "base"]
    assert "nvidia.com/gpu" not in str(trainer.get("resources"))
    assert pod["metadata"]["namespace"] == "default"
    kubernetes_validate.validate(pod, kubernetes_validate.latest_version(), strict=True)


def test_invalid_pod_field_is_caught_by_the_schema(make_context):
    _, pod = render_pod(make_context, kubernetes=K8S)
    pod["spec"]["tolerations"][0]["tolerationSeconds"] = "soon"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(pod, kubernetes_validate.latest_version(), strict=True)


def test_kubernetes_without_image_fails_clearly(make_context):
    op = TrainModelOperator(task_id="train", data_uri="s3://a", output_uri="s3://b", config=CONFIG,
                            compute="kubernetes")
    with pytest.raises(AirflowFailException, match="needs kubernetes=\\{'image'"):
        op.execute(pod_context(make_context))
