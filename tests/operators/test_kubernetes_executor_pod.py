"""The KubernetesExecutor's worker pod for a real task of these DAGs, rendered by the provider's
own PodGenerator from docker/airflow/kubernetes-pod-template.yaml exactly as the executor does
(the workload's Task SDK command included), and validated strictly against the 1.37 schemas.
No API server runs here: the pod is not scheduled (docs/kubernetes.md says so)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
TEMPLATE = REPO / "docker" / "airflow" / "kubernetes-pod-template.yaml"


@pytest.fixture(scope="module")
def train_task():
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(REPO / "dags" / "ml_training_pipeline.py"))
    assert bag.import_errors == {}
    return bag.dags["ml_training_pipeline"].get_task("train")


def render(task, template: Path = TEMPLATE) -> dict:
    from airflow.executors.workloads import ExecuteTask
    from airflow.executors.workloads.base import BundleInfo
    from airflow.executors.workloads.task import TaskInstanceDTO
    from airflow.providers.cncf.kubernetes.kubernetes_helper_functions import create_unique_id
    from airflow.providers.cncf.kubernetes.pod_generator import PodGenerator, workload_to_command_args
    from kubernetes.client import ApiClient

    run_id = "scheduled__2026-01-02T03:00:00+00:00"
    ti = TaskInstanceDTO(id=uuid.uuid4(), dag_id=task.dag_id, task_id=task.task_id, run_id=run_id, try_number=1,
                         map_index=-1, dag_version_id=uuid.uuid4(), pool_slots=1, priority_weight=1,
                         queue=task.queue)
    workload = ExecuteTask(ti=ti, token="not-a-real-token", dag_rel_path=Path("ml_training_pipeline.py"),
                           bundle_info=BundleInfo(name="dags-folder", version=None), log_path="train.log")
    pod = PodGenerator.construct_pod(
        dag_id=task.dag_id, task_id=task.task_id, pod_id=create_unique_id(task.dag_id, task.task_id),
        try_number=1, kube_image="ml-airflow:0.1.0", date=None, args=workload_to_command_args(workload),
        pod_override_object=None, base_worker_pod=PodGenerator.deserialize_model_file(str(template)),
        namespace="airflow", scheduler_job_id="1", run_id=run_id, map_index=-1)
    return ApiClient().sanitize_for_serialization(pod)


def test_the_worker_pod_of_the_train_task_validates_and_runs_the_task_sdk_in_the_image(train_task):
    pod = render(train_task)
    kubernetes_validate.validate(pod, "1.37", strict=True)
    (base,) = pod["spec"]["containers"]
    assert base["name"] == "base" and base["image"] == "ml-airflow:0.1.0"
    assert base["args"][:4] == ["python", "-m", "airflow.sdk.execution_time.execute_workload", "--json-string"]
    workload = json.loads(base["args"][4])
    assert (workload["ti"]["dag_id"], workload["ti"]["task_id"]) == ("ml_training_pipeline", "train")
    labels = pod["metadata"]["labels"]
    assert labels["dag_id"] == "ml_training_pipeline" and labels["task_id"] == "train"
    assert labels["app.kubernetes.io/part-of"] == "ml-pipelines"  # the template's own labels are kept
    assert pod["spec"]["restartPolicy"] == "Never" and pod["metadata"]["namespace"] == "airflow"
    # the artifact store the tasks write is the volume mounted where ML_ARTIFACT_ROOT points
    env = {e["name"]: e.get("value") for e in base["env"]}
    mounts = {m["name"]: m["mountPath"] for m in base["volumeMounts"]}
    assert env["ML_ARTIFACT_ROOT"] == f"file://{mounts['artifacts']}"
    assert {v["name"] for v in pod["spec"]["volumes"]} >= {"artifacts"}


def test_the_template_file_itself_validates_because_the_generator_drops_what_it_does_not_know(train_task, tmp_path):
    """The provider reads the template into V1Pod, which silently drops unknown fields: a typo'd
    ``volumeMount`` would give pods without the artifact store. So the file is validated too."""
    kubernetes_validate.validate(yaml.safe_load(TEMPLATE.read_text()), "1.37", strict=True)
    broken = yaml.safe_load(TEMPLATE.read_text())
    broken["spec"]["containers"][0]["volumeMount"] = broken["spec"]["containers"][0].pop("volumeMounts")  # a typo
    path = tmp_path / "template.yaml"
    path.write_text(yaml.safe_dump(broken))
    with pytest.raises(kubernetes_validate.ValidationError) as caught:
        kubernetes_validate.validate(broken, "1.37", strict=True)
    assert "volumeMount" in str(caught.value)
    assert "volumeMounts" not in render(train_task, path)["spec"]["containers"][0]  # what the generator would do
