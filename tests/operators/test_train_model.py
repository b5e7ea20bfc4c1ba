"""Training: the same trainer command as a local subprocess (TrainModelOperator) and as a real
KubernetesPodOperator (KubernetesTrainOperator).

No cluster runs here: the pod is rendered by the cncf-kubernetes provider's own
``build_pod_request_obj`` and validated against the Kubernetes API schemas; the provider's
calls (create, delete) are asserted at its hook/client; tests/containers runs the pod itself.
"""

from __future__ import annotations

import json
from types import SimpleNamespace
from unittest import mock

import kubernetes_validate
import pytest
from airflow.sdk.exceptions import AirflowException, AirflowFailException, TaskDeferred

from ml import artifacts
from operators.training.train_model import TrainModelOperator, training_operator
from operators.training.train_pod import KubernetesTrainOperator, kubernetes_object
from operators.training.trainer_command import trainer_command
from tests.helpers import breast_cancer_table, write_snapshot

CONFIG = {"estimator": "LogisticRegression", "target": "target", "params": {"max_iter": 500}}
K8S = {
    "image": "registry.example/ml-trainer:0.1.0",
    "namespace": "ml",
    "compute_resources": {"cpu": 2, "memory": "4Gi", "gpu": 1},  # native Jinja rendering turns "2" into an int
    "node_selector": {"cloud.google.com/gke-accelerator": "nvidia-l4"},
    "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
    "service_account_name": "trainer",
    "env_from_secrets": ["ml-storage-credentials"],
    "env_vars": {"ML_CODE_VERSION": "0.1.0"},
}


@pytest.fixture
def snapshot(tmp_path):
    uri = str(tmp_path / "snap")
    write_snapshot(uri, breast_cancer_table())
    return uri


def test_local_compute_runs_the_trainer_and_returns_its_result(snapshot, tmp_path, make_context):
    op = training_operator("local", task_id="train", data_uri=snapshot, output_uri=str(tmp_path / "model"),
                           config=CONFIG)
    assert type(op) is TrainModelOperator
    result = op.execute(make_context(run_id="manual__local"))
    manifest = artifacts.open_verified(str(tmp_path / "model"), kind="model")
    assert result == {"model_uri": str(tmp_path / "model"), "digest": manifest.digest,
                      "metrics": manifest.extra["metrics"]}
    assert manifest.lineage["run_id"] == "manual__local" and manifest.lineage["task_id"] == "train"
    assert manifest.lineage["code_version"]


def test_the_local_trainer_process_gets_no_connection_or_registry_secret(snapshot, tmp_path, make_context,
                                                                         monkeypatch):
    """What the kernel holds as the trainer process's environment (/proc/<pid>/environ)."""
    monkeypatch.setenv("AIRFLOW_CONN_ML_SOURCE", "postgres://root:planted-conn-secret@db/x")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "planted-registry-secret")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "artifact-store-key")  # the store's: the trainer needs it
    import subprocess

    seen: list[str] = []
    real_popen = subprocess.Popen

    def spy(cmd, **kwargs):  # run the real trainer, then read the environment the kernel gave it
        proc = real_popen(cmd, **kwargs)
        try:
            seen.append(open(f"/proc/{proc.pid}/environ", "rb").read().decode(errors="replace"))
        except OSError:  # it finished first: what was handed to it is what it had
            seen.append("\0".join(f"{k}={v}" for k, v in kwargs["env"].items()))
        return proc

    monkeypatch.setattr(subprocess, "Popen", spy)
    op = training_operator("local", task_id="train", data_uri=snapshot, output_uri=str(tmp_path / "model"),
                           config=CONFIG)
    assert op.execute(make_context())["model_uri"] == str(tmp_path / "model")
    assert len(seen) == 1 and "planted" not in seen[0] and "AIRFLOW_CONN_" not in seen[0]
    assert "AWS_SECRET_ACCESS_KEY=artifact-store-key" in seen[0] and "PYTHONPATH=" in seen[0]


def test_local_bad_config_fails_without_retry_and_says_why(snapshot, tmp_path, make_context):
    op = TrainModelOperator(task_id="train", data_uri=snapshot, output_uri=str(tmp_path / "model"),
                            config=json.dumps({**CONFIG, "estimator": "SVC"}))
    with pytest.raises(AirflowFailException, match="trainer exited with code 2: ml.train: error: estimator 'SVC'"):
        op.execute(make_context())


def test_unknown_compute_and_missing_image_are_refused_at_parse_time(snapshot):
    with pytest.raises(ValueError, match="compute must be one of .* ML_TRAIN_COMPUTE"):
        training_operator("spark", task_id="t", data_uri=snapshot, output_uri="/o", config=CONFIG)
    with pytest.raises(ValueError, match="needs image="):
        training_operator("kubernetes", kubernetes={"image": ""}, task_id="t", data_uri=snapshot, output_uri="/o",
                          config=CONFIG)
    with pytest.raises(ValueError, match="exactly one of output_uri"):
        TrainModelOperator(task_id="t", data_uri=snapshot, config=CONFIG)


def pod_context(make_context):
    context = make_context(run_id="scheduled__2026-01-02T03:00:00+00:00", dag_id="ml_training_pipeline")
    context["ti"] = SimpleNamespace(dag_id="ml_training_pipeline", task_id="train", map_index=-1, try_number=1)
    return context


def pod_operator(**settings) -> KubernetesTrainOperator:
    op = training_operator("kubernetes", kubernetes=settings, task_id="train",
                           data_uri="s3://ml/snapshots/x/interval=1", output_root="s3://ml/models/x", config=CONFIG)
    assert isinstance(op, KubernetesTrainOperator)
    return op


def render_pod(make_context, **settings):
    from kubernetes.client import ApiClient

    op = pod_operator(**settings)
    context = pod_context(make_context)
    pod = op.build_pod_request_obj(context, dry_run=True)
    return op, ApiClient().sanitize_for_serialization(pod)


def test_the_train_task_is_a_deferrable_pod_operator_that_deletes_its_pod():
    from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator

    op = pod_operator(**K8S)
    assert isinstance(op, KubernetesPodOperator) and op.deferrable and op.do_xcom_push and op.get_logs
    assert op.on_finish_action.value == "delete_pod" and op.multiple_outputs


def test_pod_runs_the_same_command_with_resources_placement_and_secrets(make_context):
    op, pod = render_pod(make_context, **K8S)
    spec = pod["spec"]
    (trainer,) = [c for c in spec["containers"] if c["name"] == "base"]
    command = trainer["command"] + trainer["args"]
    assert command == trainer_command("s3://ml/snapshots/x/interval=1", "s3://ml/models/x/interval=1", CONFIG,
                                      json.loads(command[command.index("--lineage") + 1]),
                                      "/airflow/xcom/return.json")
    assert json.loads(command[command.index("--lineage") + 1])["run_id"] == "scheduled__2026-01-02T03:00:00+00:00"
    assert trainer["image"] == K8S["image"] and trainer["imagePullPolicy"] == "IfNotPresent"
    assert trainer["resources"] == {"requests": {"cpu": "2", "memory": "4Gi"},
                                    "limits": {"cpu": "2", "memory": "4Gi", "nvidia.com/gpu": "1"}}
    assert trainer["terminationMessagePolicy"] == "FallbackToLogsOnError"
    assert spec["nodeSelector"] == K8S["node_selector"]
    assert spec["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert spec["serviceAccountName"] == "trainer"
    assert trainer["envFrom"] == [{"secretRef": {"name": "ml-storage-credentials"}}]
    assert {"name": "ML_CODE_VERSION", "value": "0.1.0"} in trainer["env"]
    assert pod["metadata"]["namespace"] == "ml"
    assert pod["metadata"]["labels"]["app.kubernetes.io/component"] == "trainer"
    assert any(c["name"] == "airflow-xcom-sidecar" for c in spec["containers"])  # XCom return via return.json
    assert any(m["mountPath"] == "/airflow/xcom" for m in trainer["volumeMounts"])
    assert kubernetes_validate.validate(pod, "1.37", strict=True) is not None


def test_minimal_pod_without_gpu_validates(make_context):
    _, pod = render_pod(make_context, image="ml-trainer:0.1.0", compute_resources={"cpu": "1", "memory": "1Gi", "gpu": 0})
    (trainer,) = [c for c in pod["spec"]["containers"] if c["name"] == "base"]
    assert "nvidia.com/gpu" not in str(trainer.get("resources"))
    assert pod["metadata"]["namespace"] == "default"
    kubernetes_validate.validate(pod, "1.37", strict=True)


def test_invalid_pod_field_is_caught_by_the_schema(make_context):
    _, pod = render_pod(make_context, **K8S)
    pod["spec"]["tolerations"][0]["tolerationSeconds"] = "soon"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(pod, "1.37", strict=True)


def api_pod(exit_code: int):
    """A finished training pod as the API returns it (container statuses of a terminated pod)."""
    return kubernetes_object({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "train-train-abc", "namespace": "ml"},
        "spec": {"containers": [{"name": "base", "image": "ml-trainer:0.1.0"},
                                {"name": "airflow-xcom-sidecar", "image": "alpine:3.24.2"}]},
        "status": {"phase": "Failed" if exit_code else "Succeeded", "containerStatuses": [
            {"name": "base", "ready": False, "restartCount": 0, "image": "ml-trainer:0.1.0", "imageID": "",
             "state": {"terminated": {"exitCode": exit_code, "reason": "Error" if exit_code else "Completed",
                                      "message": "ml.train: error: estimator 'SVC' is not allowed"}}},
            {"name": "airflow-xcom-sidecar", "ready": True, "restartCount": 0, "image": "alpine:3.24.2",
             "imageID": "", "state": {"running": {"startedAt": "2026-01-02T03:00:09Z"}}}]},
    }, "V1Pod")


@pytest.mark.parametrize("exit_code,expected", [(2, AirflowFailException), (1, AirflowException), (137, AirflowException)])
def test_trainer_exit_code_2_fails_without_retry_and_others_may_retry(exit_code, expected):
    op = pod_operator(image="ml-trainer:0.1.0")
    pod = api_pod(exit_code)
    with mock.patch.object(KubernetesTrainOperator, "client") as client:  # the provider's CoreV1Api
        client.read_namespaced_pod.return_value = pod
        client.list_namespaced_event.return_value = SimpleNamespace(items=[])
        with pytest.raises(expected) as info:
            op.cleanup(pod, pod)
    assert (type(info.value) is AirflowFailException) == (exit_code == 2)
    assert "train-train-abc returned a failure" in str(info.value)
    assert "train-train-abc" in str(client.delete_namespaced_pod.call_args)  # deleted either way


def test_execute_creates_the_pod_and_defers_to_the_pod_trigger(make_context):
    op = pod_operator(**K8S)
    context = pod_context(make_context)
    context["ti"].xcom_push = mock.Mock()
    created = {}

    def create(pod_request_obj, context):
        created["pod"] = pod_request_obj
        return pod_request_obj

    with mock.patch.object(KubernetesTrainOperator, "get_or_create_pod", side_effect=create), \
            mock.patch.object(KubernetesTrainOperator, "hook"):
        with pytest.raises(TaskDeferred) as deferred:
            op.execute(context)
    trigger = deferred.value.trigger
    assert type(trigger).__name__ == "KubernetesPodTrigger"
    kwargs = trigger.serialize()[1]
    assert kwargs["pod_name"] == created["pod"].metadata.name and kwargs["pod_namespace"] == "ml"
    assert "--result-file" in created["pod"].spec.containers[0].args


def test_on_kill_deletes_the_pod_through_the_client():
    op = pod_operator(image="ml-trainer:0.1.0")
    op.pod = api_pod(0)
    with mock.patch.object(KubernetesTrainOperator, "client") as client:
        op.on_kill()
    client.delete_namespaced_pod.assert_called_once_with(name="train-train-abc", namespace="ml")


def test_a_local_trainer_dies_with_the_task_process_that_started_it(tmp_path):
    """A task process killed (timeout, OOM, a kill -9 of the worker) takes its trainer with it, so
    no orphan keeps writing beside the retry; the control child, started without it, survives."""
    import os
    import subprocess
    import sys
    import time
    from pathlib import Path

    def state(pid: int) -> str:
        try:
            return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            return "gone"

    pids = tmp_path / "pids"
    task = ("import os, subprocess, sys\n"
            "from operators.training.train_model import _die_with_parent\n"
            "sleep = [sys.executable, '-c', 'import time; time.sleep(120)']\n"
            "tied = subprocess.Popen(sleep, preexec_fn=_die_with_parent)\n"
            "control = subprocess.Popen(sleep)\n"
            f"open({str(pids)!r}, 'w').write(f'{{tied.pid}} {{control.pid}}')\n"
            "os._exit(0)\n")  # the task process dies without cleaning up
    subprocess.run([sys.executable, "-c", task], check=True, cwd=Path(__file__).resolve().parents[2], timeout=60)
    tied, control = map(int, pids.read_text().split())
    try:
        deadline = time.monotonic() + 10
        while state(tied) not in ("gone", "Z") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert state(tied) in ("gone", "Z")  # killed (a zombie until its new parent reaps it)
        assert state(control) in ("S", "R")
    finally:
        for pid in (tied, control):
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass
