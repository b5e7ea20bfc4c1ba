"""The pod the cncf-kubernetes provider renders for `compute="kubernetes"`, executed.

No Kubernetes API server can run here; `podman kube play` is the one real consumer of pod
YAML. The pod is the exact object KubernetesPodOperator builds (validated strictly against the
1.37 schemas), with the artifact store mounted as a hostPath volume; the XCom result is read
from the sidecar the way the operator reads it (exec `cat /airflow/xcom/return.json`).
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import kubernetes_validate
import pytest
import yaml

from ml import artifacts
from operators.training.train_model import training_operator
from tests.helpers import breast_cancer_table, write_snapshot

# Fixture setup counts: the first test builds the base and the images it needs.
pytestmark = pytest.mark.timeout(1200)

CONFIG = {"estimator": "LogisticRegression", "params": {"max_iter": 500}, "target": "target", "seed": 3}


def test_the_rendered_training_pod_runs_under_podman_and_writes_the_model(podman, images, tmp_path, make_context):
    from kubernetes.client import ApiClient

    store = tmp_path / "artifacts"
    store.mkdir()
    store.chmod(0o777)  # the trainer image runs as an unprivileged user
    write_snapshot(str(store / "snapshots" / "interval=1"), breast_cancer_table())
    op = training_operator(
        "kubernetes", task_id="train", data_uri="/data/snapshots/interval=1", output_root="/data/models",
        config=CONFIG,
        kubernetes={"image": images["trainer"], "namespace": "ml", "compute_resources": {"cpu": "1", "memory": "1Gi"},
                    "volumes": [{"name": "artifacts", "hostPath": {"path": str(store), "type": "Directory"}}],
                    "volume_mounts": [{"name": "artifacts", "mountPath": "/data"}]})
    context = make_context(run_id="scheduled__2026-01-02T03:00:00+00:00", dag_id="ml_training_pipeline")
    context["ti"] = SimpleNamespace(dag_id="ml_training_pipeline", task_id="train", map_index=-1, try_number=1)
    pod = ApiClient().sanitize_for_serialization(op.build_pod_request_obj(context, dry_run=True))
    kubernetes_validate.validate(pod, "1.37", strict=True)
    (trainer,) = [c for c in pod["spec"]["containers"] if c["name"] == "base"]
    assert trainer["imagePullPolicy"] == "IfNotPresent" and {"name": "artifacts", "mountPath": "/data"} in [
        {k: m[k] for k in ("name", "mountPath")} for m in trainer["volumeMounts"]]

    name = pod["metadata"]["name"]
    spec_file = tmp_path / "pod.yaml"
    spec_file.write_text(yaml.safe_dump(pod))
    podman.run("kube", "play", "--network", "none", str(spec_file), timeout=300)
    try:
        exit_code = podman.run("wait", f"{name}-base", timeout=600).stdout.strip()
        logs = podman.run("logs", f"{name}-base", check=False)
        assert exit_code == "0", logs.stdout[-3000:] + logs.stderr[-3000:]
        result = json.loads(podman.run("exec", f"{name}-airflow-xcom-sidecar", "cat", "/airflow/xcom/return.json").stdout)
    finally:
        podman.run("kube", "down", str(spec_file), check=False)
    assert result["model_uri"] == "/data/models/interval=1"
    model = artifacts.open_verified(str(store / "models" / "interval=1"), kind="model")
    assert model.digest == result["digest"] and model.extra["estimator"] == "LogisticRegression"
    assert model.lineage["snapshot_digest"] == artifacts.read_manifest(str(store / "snapshots" / "interval=1")).digest
