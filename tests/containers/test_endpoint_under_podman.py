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
from operators.deploy.targets.kubernetes_manifests import GRPC_PORT, PORT, EndpointSpec, endpoint_objects
from tests.containers.conftest import wait_http
from tests.helpers import breast_cancer_table, write_snapshot

pytestmark = pytest.mark.timeout(1200)


@pytest.mark.parametrize("model", ["tabular", "team"])
def test_the_rendered_deployment_and_service_serve_under_podman(podman, docker, images, request, tmp_path,
                                                                 monkeypatch, model):
    """The tabular built-in in the project's serving image, and a team's own model in its serving
    image (built FROM the project's): the same Kubernetes objects serve both."""
    store = tmp_path / "artifacts"
    store.mkdir()
    store.chmod(0o755)
    if model == "tabular":
        table, config, image = breast_cancer_table(), {"estimator": "LogisticRegression", "target": "target",
                                                       "params": {"max_iter": 500}}, images["serving"]
        rows = table.drop(["target"]).slice(0, 4).to_pylist()
    else:
        from demo.moderation_posts import table as posts_table

        team = request.getfixturevalue("team_images")
        podman.load_from(docker, team["serving"])
        monkeypatch.setenv("ML_MODEL_CLASSES", "keywords=keyword_moderation.model:KeywordModel")
        table = posts_table(600, seed=8).select(["text", "label"])
        config, image = {"model": "keywords", "target": "label", "params": {"blocked_terms": ["giveaway"]}}, \
            team["serving"]
        rows = [{"text": "a giveaway"}, {"text": "see you at the meeting"}, {"text": "週末は家族と公園に行きました"},
                {"text": ""}]
    write_snapshot(str(store / "snapshots" / "s1"), table)
    train.train(str(store / "snapshots" / "s1"), str(store / "models" / "m1"), train.parse_config(config))
    spec = EndpointSpec.from_settings({
        "image": image, "service_level": "development",
        "volumes": [{"name": "artifacts", "hostPath": {"path": str(store), "type": "Directory"}}],
        "volume_mounts": [{"name": "artifacts", "mountPath": "/data", "readOnly": True}]})
    objects = endpoint_objects("podman-it", "1", "/data/models/m1", spec)
    for obj in objects:
        kubernetes_validate.validate(obj, "1.37", strict=True)
    deployment, service = copy.deepcopy(objects[0]), objects[1]
    port = free_port()
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["ports"] == [{"name": "http", "containerPort": PORT, "protocol": "TCP"},
                                  {"name": "grpc", "containerPort": GRPC_PORT, "protocol": "TCP"}]
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
        invocation = urllib.request.Request(f"http://127.0.0.1:{port}/invocations",
                                            data=json.dumps({"instances": rows}).encode(),
                                            headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(invocation, timeout=10) as resp:
            answer = json.loads(resp.read())
        assert answer["model_version"] == "1" and len(answer["predictions"]) == 4
        if model == "team":
            assert answer["predictions"][0] == "flagged"
    finally:
        logs = podman.run("ps", "-a", "--format", "{{.Names}}", check=False).stdout
        podman.run("kube", "down", str(spec_file), check=False)
    assert "ml-podman-it" in logs
