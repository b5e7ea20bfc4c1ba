"""The Kubernetes objects of one model endpoint, as plain API-shaped dicts.

Per endpoint: a Deployment of the serving image (model URI and version in the pod spec, so a
new version is a new ReplicaSet and a rolling update), a Service, a PodDisruptionBudget and an
optional HorizontalPodAutoscaler; optionally a canary Deployment behind the same Service.
Service levels (development / staging / production) set the namespace, the replica count and
how many pods a disruption may take. Rendering is pure, so tests validate exactly what is
applied against the Kubernetes schemas, and podman runs it.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, fields
from typing import Any

MANAGER = "ml-pipelines"  # field manager of the server-side applies, and the managed-by label
VERSION_ANNOTATION = "ml-pipelines.io/model-version"
URI_ANNOTATION = "ml-pipelines.io/model-uri"
LEVEL_LABEL = "ml-pipelines.io/service-level"
PORT = 8080  # the serving image's ML_SERVE_PORT
GRPC_PORT = 8081  # the Open Inference Protocol over gRPC (ML_SERVE_GRPC_PORT); the probes stay on HTTP

# replicas, and how many pods a voluntary disruption (node drain, upgrade) may take at once
SERVICE_LEVELS: dict[str, dict[str, Any]] = {
    "development": {"replicas": 1, "max_unavailable": 1},
    "staging": {"replicas": 2, "max_unavailable": 1},
    "production": {"replicas": 3, "max_unavailable": 1},
}


@dataclass(frozen=True)
class EndpointSpec:
    """Settings of a Kubernetes endpoint (connection extras, overridden by the DAG's settings)."""

    image: str = "ml-serving:0.1.0"
    service_level: str = "development"
    namespace: str | None = None  # default: ml-<service_level>
    replicas: int | None = None  # default: the service level's
    cpu: str = "500m"
    memory: str = "1Gi"
    max_surge: int | str = 1
    max_unavailable: int | str = 0  # a rollout never takes serving capacity away
    min_ready_seconds: int = 5
    progress_deadline_seconds: int = 300
    readiness_timeout_seconds: int = 180
    pre_stop_seconds: int = 5  # endpoints drop the pod before it stops accepting
    drain_seconds: int = 10  # uvicorn's graceful shutdown: in-flight requests finish
    autoscale: dict[str, int] | None = None  # {"min": 2, "max": 6, "cpu_percent": 70}
    canary_percent: int = 0  # share of replicas a new version gets first, behind the same Service
    env_from_secrets: tuple[str, ...] = ()  # e.g. artifact store credentials
    volumes: tuple[dict, ...] = ()  # e.g. a PVC with the artifact store, when it is a path
    volume_mounts: tuple[dict, ...] = ()
    service_account_name: str | None = None
    image_pull_policy: str = "IfNotPresent"

    @classmethod
    def from_settings(cls, settings: dict[str, Any]) -> EndpointSpec:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(settings) - known - {"kubernetes_conn_id", "target"})
        if unknown:
            raise ValueError(f"unknown kubernetes endpoint settings {unknown}; known: {sorted(known)}")
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in settings.items() if k in known}
        spec = cls(**values)
        if spec.service_level not in SERVICE_LEVELS:
            raise ValueError(f"service_level {spec.service_level!r} is not one of {sorted(SERVICE_LEVELS)}")
        if not 0 <= int(spec.canary_percent) < 100:
            raise ValueError(f"canary_percent must be in [0, 100), got {spec.canary_percent}")
        return spec

    @property
    def ns(self) -> str:
        return self.namespace or f"ml-{self.service_level}"

    @property
    def desired_replicas(self) -> int:
        return int(self.replicas or SERVICE_LEVELS[self.service_level]["replicas"])


def resource_name(endpoint: str) -> str:
    """A DNS-1035 label from an endpoint name (what Services require)."""
    name = re.sub(r"[^a-z0-9-]+", "-", endpoint.lower()).strip("-") or "endpoint"
    return (name if name.startswith("ml-") else f"ml-{name}")[:50].rstrip("-")


def _labels(endpoint: str, spec: EndpointSpec, track: str | None = None) -> dict[str, str]:
    labels = {"app.kubernetes.io/name": "ml-serving", "app.kubernetes.io/instance": resource_name(endpoint),
              "app.kubernetes.io/managed-by": MANAGER, LEVEL_LABEL: spec.service_level}
    return {**labels, "ml-pipelines.io/track": track} if track else labels


def selector(endpoint: str, track: str | None = None) -> dict[str, str]:
    base = {"app.kubernetes.io/name": "ml-serving", "app.kubernetes.io/instance": resource_name(endpoint)}
    return {**base, "ml-pipelines.io/track": track} if track else base


def label_selector(labels: dict[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in labels.items())


def _probe(path: str, period: int, failures: int, timeout: int = 2) -> dict[str, Any]:
    return {"httpGet": {"path": path, "port": "http"}, "periodSeconds": period, "timeoutSeconds": timeout,
            "failureThreshold": failures}


def deployment(endpoint: str, version: str, uri: str, spec: EndpointSpec, track: str = "stable",
               replicas: int | None = None, model_name: str = "") -> dict[str, Any]:
    name = resource_name(endpoint) + ("" if track == "stable" else f"-{track}")
    model = {VERSION_ANNOTATION: str(version), URI_ANNOTATION: uri}
    resources = {"cpu": str(spec.cpu), "memory": str(spec.memory)}
    container: dict[str, Any] = {
        "name": "serving",
        "image": spec.image,
        "imagePullPolicy": spec.image_pull_policy,
        "args": ["--model", uri, "--model-version", str(version), *(["--name", model_name] if model_name else [])],
        "ports": [{"name": "http", "containerPort": PORT, "protocol": "TCP"},
                  {"name": "grpc", "containerPort": GRPC_PORT, "protocol": "TCP"}],
        "env": [{"name": "ML_SERVE_HOST", "value": "0.0.0.0"}, {"name": "ML_SERVE_PORT", "value": str(PORT)},
                {"name": "ML_SERVE_GRPC_PORT", "value": str(GRPC_PORT)}],
        "resources": {"requests": resources, "limits": {"memory": resources["memory"]}},
        # startup: the model is downloaded and verified first; then readiness gates traffic and
        # liveness restarts a server that stopped answering
        "startupProbe": _probe("/ping", 2, max(1, spec.readiness_timeout_seconds // 2)),
        "readinessProbe": _probe("/ping", 5, 3),
        "livenessProbe": _probe("/ping", 10, 3, timeout=5),
        "lifecycle": {"preStop": {"exec": {"command": ["sleep", str(spec.pre_stop_seconds)]}}},
        "securityContext": {"allowPrivilegeEscalation": False, "runAsNonRoot": True, "runAsUser": 10001,
                            "capabilities": {"drop": ["ALL"]}},
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    if spec.env_from_secrets:
        container["envFrom"] = [{"secretRef": {"name": s}} for s in spec.env_from_secrets]
    if spec.volume_mounts:
        container["volumeMounts"] = [dict(m) for m in spec.volume_mounts]
    pod_spec: dict[str, Any] = {
        "containers": [container],
        "terminationGracePeriodSeconds": spec.pre_stop_seconds + spec.drain_seconds + 5,
    }
    if spec.volumes:
        pod_spec["volumes"] = [dict(v) for v in spec.volumes]
    if spec.service_account_name:
        pod_spec["serviceAccountName"] = spec.service_account_name
    body: dict[str, Any] = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": spec.ns, "labels": _labels(endpoint, spec, track),
                     "annotations": model},
        "spec": {
            "revisionHistoryLimit": 5,
            "minReadySeconds": spec.min_ready_seconds,
            "progressDeadlineSeconds": spec.progress_deadline_seconds,
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": spec.max_surge,
                                                                    "maxUnavailable": spec.max_unavailable}},
            "selector": {"matchLabels": selector(endpoint, track)},
            "template": {"metadata": {"labels": _labels(endpoint, spec, track), "annotations": model},
                         "spec": pod_spec},
        },
    }
    if not (spec.autoscale and track == "stable"):  # with an HPA, the HPA owns spec.replicas
        body["spec"]["replicas"] = spec.desired_replicas if replicas is None else replicas
    return body


def canary_replicas(spec: EndpointSpec) -> int:
    """The canary's share of the stable replica count, at least one pod."""
    return max(1, math.ceil(spec.desired_replicas * int(spec.canary_percent) / 100))


def service(endpoint: str, spec: EndpointSpec) -> dict[str, Any]:
    """One Service for stable and canary pods: traffic splits by their replica counts."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": resource_name(endpoint), "namespace": spec.ns, "labels": _labels(endpoint, spec)},
        "spec": {"type": "ClusterIP", "selector": selector(endpoint),
                 "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"},
                           # cleartext HTTP/2, so meshes and L7 balancers spread gRPC calls, not connections
                           {"name": "grpc", "port": GRPC_PORT, "targetPort": "grpc", "protocol": "TCP",
                            "appProtocol": "kubernetes.io/h2c"}]},
    }


def disruption_budget(endpoint: str, spec: EndpointSpec) -> dict[str, Any]:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {"name": resource_name(endpoint), "namespace": spec.ns, "labels": _labels(endpoint, spec)},
        "spec": {"maxUnavailable": SERVICE_LEVELS[spec.service_level]["max_unavailable"],
                 "selector": {"matchLabels": selector(endpoint)}},
    }


def autoscaler(endpoint: str, spec: EndpointSpec) -> dict[str, Any]:
    scale = spec.autoscale or {}
    low = int(scale.get("min", spec.desired_replicas))
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": resource_name(endpoint), "namespace": spec.ns, "labels": _labels(endpoint, spec)},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": resource_name(endpoint)},
            "minReplicas": low,
            "maxReplicas": int(scale.get("max", max(low, 2 * spec.desired_replicas))),
            "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {
                "type": "Utilization", "averageUtilization": int(scale.get("cpu_percent", 70))}}}],
        },
    }


def endpoint_objects(endpoint: str, version: str, uri: str, spec: EndpointSpec,
                     model_name: str = "") -> list[dict[str, Any]]:
    """What a (non-canary) deploy of ``version`` applies, in order: the Deployment first, so a
    Service never selects nothing while the first version starts."""
    objects = [deployment(endpoint, version, uri, spec, model_name=model_name), service(endpoint, spec),
               disruption_budget(endpoint, spec)]
    if spec.autoscale:
        objects.append(autoscaler(endpoint, spec))
    return objects
