"""The Kubernetes endpoint's rendered Deployment and Service, run by `podman kube play` with the
serving image: the objects the Kubernetes target applies, validated strictly against the 1.37
schemas, then executed; /ping and /invocations answer at the probe paths.

Stand-in: podman has no kube-proxy, so the Service's port is published by giving the container
port a hostPort in the copy that is played (the only change to the rendered objects).
"""

from __future__ import annotations

import copy
import json
import urllib.request

import kubernetes_validate
import pytest
import yaml

from demo.local_airflow import free_port
from ml import train
from operators.deploy_targets.kubernetes_manifests import PORT, EndpointSpec, endpoint_objects
from tests.containers.conftest import wait_http
from tests.helpers import breast_cancer_table, write_snapshot

pytestmark = pytest.mark.timeout(1200)


def test_the_rendered_deployment_and_service_serve_under_podman(podman, images, tmp_path):
    store = tmp_path / "artifacts"
    store.mkdir()
    store.chmod(0o755)
    table = breast_cancer_table()
    write_snapshot(str(store / "snapshots" / "s1"), table)
    train.train(str(store / "snapshots" / "s1"), str(store / "models" / "m1"),
                train.parse_config({"estimator": "LogisticRegression", "target": "target", "params": {"max_iter": 500}}))
    spec = EndpointSpec.from_settings({
        "image": images["serving"], "service_level": "development",
        "volumes": [{"name": "artifacts", "hostPath": {"path": str(store), "type": "Directory"}}],
        "volume_mounts": [{"name": "artifacts", "mountPath": "/data", "readOnly": True}]})
    objects = endpoint_objects("podman-it", "1", "/data/models/m1", spec)
    for obj in objects:
        kubernetes_validate.validate(obj, "1.37", strict=True)
    deployment, service = copy.deepcopy(objects[0]), objects[1]
    port = free_port()
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["ports"] == [{"name": "http", "containerPort": PORT, "protocol": "TCP"}]
    container["ports"][0]["hostPort"] = port  # the Service's stand-in (see the module docstring)
    spec_file = tmp_path / "endpoint.yaml"
    spec_file.write_text(yaml.safe_dump_all([deployment, service]))

    podman.run("kube", "play", str(spec_file), timeout=300)
    try:
        probe = container["readinessProbe"]["httpGet"]["path"]
        wait_http(f"http://127.0.0.1:{port}{probe}", timeout=120)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{probe}", timeout=5) as resp:
            ping = json.loads(resp.read())
        assert ping["model_version"] == "1" and ping["source"] == "/data/models/m1"
        rows = table.drop(["target"]).slice(0, 4).to_pylist()
        request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations",
                                         data=json.dumps({"instances": rows}).encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as resp:
            answer = json.loads(resp.read())
        assert answer["model_version"] == "1" and len(answer["predictions"]) == 4
    finally:
        logs = podman.run("ps", "-a", "--format", "{{.Names}}", check=False).stdout
        podman.run("kube", "down", str(spec_file), check=False)
    assert "ml-podman-it" in logs
