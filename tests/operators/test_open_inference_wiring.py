"""Kubernetes exposes the Open Inference Protocol's gRPC port (the probes stay on HTTP) and gives
the server the registered model's name, its name in the protocol."""

from __future__ import annotations

import kubernetes_validate

from operators.deploy.targets.base import Served
from operators.deploy.targets.kubernetes_manifests import GRPC_PORT, EndpointSpec, endpoint_objects


def test_kubernetes_exposes_grpc_on_the_pod_and_the_service_and_names_the_model():
    spec = EndpointSpec.from_settings({"image": "registry.example/ml-serving:1", "service_level": "production"})
    deployment, service, _ = endpoint_objects("fraud", "7", "s3://models/fraud/7", spec, model_name="fraud_detector")
    for obj in (deployment, service):
        kubernetes_validate.validate(obj, "1.37", strict=True)
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["args"][-2:] == ["--name", "fraud_detector"]
    assert {"name": "grpc", "containerPort": GRPC_PORT, "protocol": "TCP"} in container["ports"]
    assert {"name": "ML_SERVE_GRPC_PORT", "value": str(GRPC_PORT)} in container["env"]
    assert all(container[p]["httpGet"]["port"] == "http" for p in ("startupProbe", "readinessProbe", "livenessProbe"))
    grpc_port = next(p for p in service["spec"]["ports"] if p["name"] == "grpc")
    assert grpc_port["targetPort"] == "grpc" and grpc_port["appProtocol"] == "kubernetes.io/h2c"
    # the version and URI annotations compare as before: the name is not part of what is served
    assert Served("7", "s3://models/fraud/7", name="a") == Served("7", "s3://models/fraud/7", name="b")
