"""The Kubernetes target: an ml.serve Deployment + Service (+ PDB, HPA, canary) per endpoint.

Objects are rendered by ``kubernetes_manifests`` and applied with server-side apply through
the cncf-kubernetes provider's hook (connection ``kubernetes_conn_id``), so a deploy is
idempotent and a re-run changes nothing. A new version is a new pod template: the Deployment
controller rolls it out (maxUnavailable 0: old pods serve until new ones are ready), and
``status`` reads the Deployment, its ReplicaSets and Pods through the provider's async hook
(``kubernetes_rollout`` decides). Rolling back re-applies the previous version's objects, which
is what ``kubectl rollout undo`` does: the old ReplicaSet's template matches and scales back.

Settings (the endpoint connection's extras, overridden by the DAG's): ``kubernetes_conn_id``
and the fields of ``EndpointSpec`` (image, service_level, namespace, replicas, cpu, memory,
rolling-update parameters, autoscale, canary_percent, env_from_secrets, volumes...), and
``grpc_address`` (host:port) where the smoke test reaches the endpoint's gRPC when it goes over
gRPC from outside the cluster; inside it, the Service's cluster name (or the canary pod) is used.
"""

from __future__ import annotations

from typing import Any

from operators.deploy.targets.base import DeployRefusedError, DeployStatus, DeployTarget, Served
from operators.deploy.targets.kubernetes_manifests import (
    MANAGER,
    URI_ANNOTATION,
    VERSION_ANNOTATION,
    GRPC_PORT,
    EndpointSpec,
    canary_replicas,
    deployment,
    disruption_budget,
    endpoint_objects,
    label_selector,
    resource_name,
    selector,
    service,
)

# kind -> (kubernetes.client API class, its server-side-apply capable patch method)
APPLY = {
    "Deployment": ("AppsV1Api", "patch_namespaced_deployment"),
    "Service": ("CoreV1Api", "patch_namespaced_service"),
    "PodDisruptionBudget": ("PolicyV1Api", "patch_namespaced_pod_disruption_budget"),
    "HorizontalPodAutoscaler": ("AutoscalingV2Api", "patch_namespaced_horizontal_pod_autoscaler"),
}


class KubernetesTarget(DeployTarget):
    kind = "kubernetes"
    protocols = ("invocations", "v2", "grpc")

    def __init__(self, endpoint: str, conn_id: str | None = None, settings: dict[str, Any] | None = None,
                 conn_extras: dict[str, Any] | None = None):
        super().__init__(endpoint, conn_id, settings)
        merged = {k: v for k, v in {**(conn_extras or {}), **self.settings}.items() if k != "target"}
        self.kube_conn_id = merged.pop("kubernetes_conn_id", "kubernetes_default")
        self.grpc_address = merged.pop("grpc_address", None)
        self.spec = EndpointSpec.from_settings(merged)
        self.name = resource_name(endpoint)

    @classmethod
    def from_connection(cls, endpoint: str, conn_id: str | None, conn, settings: dict[str, Any]) -> KubernetesTarget:
        return cls(endpoint, conn_id, settings, dict(conn.extra_dejson) if conn is not None else {})

    # ------------------------------------------------------------------ API access
    def _api(self):
        from airflow.providers.cncf.kubernetes.hooks.kubernetes import KubernetesHook

        return KubernetesHook(conn_id=self.kube_conn_id).api_client

    def _apply(self, api_client, obj: dict[str, Any]) -> dict[str, Any]:
        """Server-side apply of one object (field manager ``ml-pipelines``, conflicts forced)."""
        from kubernetes import client
        from kubernetes.client.exceptions import ApiException

        api_class, method = APPLY[obj["kind"]]
        patch = getattr(getattr(client, api_class)(api_client), method)
        try:
            applied = patch(obj["metadata"]["name"], obj["metadata"]["namespace"], obj, field_manager=MANAGER,
                            force=True, _content_type="application/apply-patch+yaml")
        except ApiException as exc:
            if exc.status and 400 <= exc.status < 500:
                raise DeployRefusedError(f"the API server refused {obj['kind']} {obj['metadata']['namespace']}/"
                                         f"{obj['metadata']['name']} ({exc.status} {exc.reason}): "
                                         f"{(exc.body or '')[:500]}") from None
            raise
        return api_client.sanitize_for_serialization(applied)

    def _apply_all(self, api_client, objects: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[str]]:
        """Apply ``objects`` in order; the applied objects and their ``Kind/name`` for the log."""
        applied = [self._apply(api_client, obj) for obj in objects]
        return applied, [f"{o['kind']}/{o['metadata']['name']}" for o in applied]

    def _read_deployment(self, api_client, name: str) -> dict[str, Any] | None:
        from kubernetes import client
        from kubernetes.client.exceptions import ApiException

        try:
            found = client.AppsV1Api(api_client).read_namespaced_deployment(name, self.spec.ns)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return api_client.sanitize_for_serialization(found)

    # ------------------------------------------------------------------ interface
    def current(self) -> Served | None:
        from operators.deploy.targets.kubernetes_rollout import rollout_status

        found = self._read_deployment(self._api(), self.name)
        if found is None:
            return None
        annotations = found["metadata"].get("annotations", {})
        if VERSION_ANNOTATION not in annotations:
            return None
        live = rollout_status(found, [], []).state == "serving"
        return Served(annotations[VERSION_ANNOTATION], annotations[URI_ANNOTATION], live=live)

    def deploy(self, served: Served) -> dict[str, Any]:
        api = self._api()
        canary = bool(self.spec.canary_percent) and self._read_deployment(api, self.name) is not None
        if canary:  # the new version beside the stable one, behind the same Service
            objects = [deployment(self.endpoint, served.version, served.uri, self.spec, track="canary",
                                  replicas=canary_replicas(self.spec), model_name=served.name),
                       service(self.endpoint, self.spec), disruption_budget(self.endpoint, self.spec)]
        else:
            objects = endpoint_objects(self.endpoint, served.version, served.uri, self.spec, model_name=served.name)
        applied, names = self._apply_all(api, objects)
        watched = applied[0]["metadata"]
        return self.handle(
            version=served.version, uri=served.uri, namespace=self.spec.ns, deployment=watched["name"],
            track="canary" if canary else "stable", generation=watched.get("generation"),
            kubernetes_conn_id=self.kube_conn_id, readiness_timeout=self.spec.readiness_timeout_seconds,
            facts={"applied": names, "namespace": self.spec.ns, "service_level": self.spec.service_level})

    @classmethod
    async def status(cls, handle: dict[str, Any]) -> DeployStatus:
        from operators.deploy.targets.kubernetes_rollout import rollout_status

        found, replica_sets, pods = await read_rollout(handle)
        if found is None:
            return DeployStatus("failed", f"deployment {handle['namespace']}/{handle['deployment']} no longer exists")
        asked = found["metadata"].get("annotations", {}).get(VERSION_ANNOTATION)
        if asked != handle["version"]:
            return DeployStatus("failed", f"superseded: deployment {handle['deployment']} now asks for version {asked}")
        status = rollout_status(found, replica_sets, pods, readiness_timeout=handle["readiness_timeout"])
        return DeployStatus(status.state, status.reason, version=asked if status.state == "serving" else None)

    def invoke(self, rows: list) -> dict[str, Any]:
        """Through the API server's proxy: the Service (all pods), or a ready canary pod when the
        deploy in flight is a canary (so the answer comes from the new version)."""
        return self._proxy_post("invocations", {"instances": rows})

    def infer(self, request, protocol: str) -> dict[str, Any]:
        """V2 REST through the API server's proxy, as ``invoke``; gRPC (HTTP/2, which the proxy does
        not carry) straight to the canary pod or the Service's cluster name, or ``grpc_address``."""
        from operators.deploy import open_inference_client as oip

        if protocol == "v2":
            return oip.rest_answer(self._proxy_post(oip.rest_path(request).lstrip("/"), oip.rest_body(request)),
                                   request)
        return oip.infer_grpc(self._grpc_target(), request)

    def _grpc_target(self) -> str:
        if self.grpc_address:
            return self.grpc_address
        if (self.in_flight or {}).get("track") == "canary":
            return f"{self._ready_pod(self._api(), 'canary', ip=True)}:{GRPC_PORT}"
        return f"{self.name}.{self.spec.ns}.svc:{GRPC_PORT}"

    def _proxy_post(self, route: str, body: dict) -> dict[str, Any]:
        from kubernetes.client.exceptions import ApiException

        from operators.deploy.endpoint_client import EndpointError

        api = self._api()
        if (self.in_flight or {}).get("track") == "canary":
            path = f"/api/v1/namespaces/{self.spec.ns}/pods/{self._ready_pod(api, 'canary')}:http/proxy/{route}"
        else:
            path = f"/api/v1/namespaces/{self.spec.ns}/services/{self.name}:http/proxy/{route}"
        try:
            return api.call_api(path, "POST", body=body, response_type="object",
                                header_params={"Content-Type": "application/json", "Accept": "application/json"},
                                auth_settings=["BearerToken"], _return_http_data_only=True, _request_timeout=30)
        except ApiException as exc:
            raise EndpointError(f"{path} answered {exc.status}: {(exc.body or exc.reason or '')[:500]}",
                                exc.status) from None

    def _ready_pod(self, api_client, track: str, ip: bool = False) -> str:
        from kubernetes import client

        from operators.deploy.endpoint_client import EndpointError

        pods = client.CoreV1Api(api_client).list_namespaced_pod(
            self.spec.ns, label_selector=label_selector(selector(self.endpoint, track))).items
        for pod in pods:
            if any(c.type == "Ready" and c.status == "True" for c in (pod.status.conditions or [])):
                return pod.status.pod_ip if ip else pod.metadata.name
        raise EndpointError(f"no ready {track} pod of {self.name} in {self.spec.ns}")

    def rollback(self, previous: Served) -> dict[str, Any]:
        from kubernetes import client

        api = self._api()
        if (self.in_flight or {}).get("track") == "canary":  # stable never changed: remove the canary
            client.AppsV1Api(api).delete_namespaced_deployment(f"{self.name}-canary", self.spec.ns)
            return {"action": "deleted canary", "deployment": f"{self.name}-canary"}
        _, names = self._apply_all(api, endpoint_objects(self.endpoint, previous.version, previous.uri, self.spec))
        return {"action": "re-applied previous version", "version": previous.version, "applied": names}


async def read_rollout(handle: dict[str, Any]) -> tuple[dict | None, list[dict], list[dict]]:
    """The Deployment of ``handle``, its ReplicaSets and Pods, as API JSON (async hook)."""
    from airflow.providers.cncf.kubernetes.hooks.kubernetes import AsyncKubernetesHook
    from kubernetes_asyncio import client
    from kubernetes_asyncio.client.exceptions import ApiException

    hook = AsyncKubernetesHook(conn_id=handle["kubernetes_conn_id"])
    async with hook.get_conn() as api:
        apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
        try:
            found = await apps.read_namespaced_deployment(handle["deployment"], handle["namespace"])
        except ApiException as exc:
            if exc.status == 404:
                return None, [], []
            raise
        labels = label_selector(found.spec.selector.match_labels)
        replica_sets = await apps.list_namespaced_replica_set(handle["namespace"], label_selector=labels)
        pods = await core.list_namespaced_pod(handle["namespace"], label_selector=labels)
        as_json = api.sanitize_for_serialization
        return as_json(found), [as_json(r) for r in replica_sets.items], [as_json(p) for p in pods.items]
