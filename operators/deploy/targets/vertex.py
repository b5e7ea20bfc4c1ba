"""The Vertex AI target: upload the model with our serving image, deploy it to an endpoint with
a traffic split, promote it to 100 %, and roll back by moving traffic back and undeploying it,
all through the google provider's Vertex AI hooks (connection ``gcp_conn_id``).

The serving image is the model's container: Vertex copies ``artifact_uri`` (the verified
artifact, staged to GCS when it lives elsewhere) to ``AIP_STORAGE_URI`` and routes health
checks and predictions to ``AIP_HEALTH_ROUTE`` / ``AIP_PREDICT_ROUTE`` on ``AIP_HTTP_PORT``,
which ml.serve honours, answering ``{"instances": [...]}`` with ``{"predictions": [...]}``.

A deploy is a DeployModel long-running operation; ``status`` reads the operation (and that the
new deployed model takes traffic). With ``canary_percent`` < 100 the new model first takes that
share beside the serving one; ``confirm`` (after the smoke test) promotes it to 100 % and
undeploys the old one, ``rollback`` gives the old one its 100 % back and undeploys the new one.

Settings (endpoint connection extras, overridden by the DAG's): ``project_id``, ``region``,
``endpoint_id`` (an existing Vertex endpoint), ``image`` (serving image in Artifact Registry),
``staging_uri`` (``gs://`` folder for artifacts that are not in GCS yet), ``gcp_conn_id``,
``machine_type``, ``min_replica_count``, ``max_replica_count``, ``canary_percent``.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from operators.deploy.targets.base import DeployRefusedError, DeployStatus, DeployTarget, Served, spec_from_settings
from operators.deploy.targets.model_package import cloud_name, short_id

VERSION_LABEL, URI_ENV = "ml-model-version", "ML_MODEL_SOURCE_URI"
SMOKE_ATTEMPTS = 40  # predictions asked until the canary answers (traffic is split at random)


@dataclass(frozen=True)
class VertexSpec:
    project_id: str = ""
    region: str = "us-central1"
    endpoint_id: str = ""
    image: str = ""
    staging_uri: str = ""
    gcp_conn_id: str = "google_cloud_default"
    machine_type: str = "n1-standard-2"
    min_replica_count: int = 1
    max_replica_count: int = 1
    canary_percent: int = 100

    @classmethod
    def from_settings(cls, settings: dict[str, Any]) -> VertexSpec:
        spec = spec_from_settings(cls, settings, "Vertex AI", ("project_id", "endpoint_id", "image"))
        if not 1 <= int(spec.canary_percent) <= 100:
            raise ValueError(f"canary_percent must be between 1 and 100, got {spec.canary_percent}")
        if spec.staging_uri and not spec.staging_uri.startswith("gs://"):
            raise ValueError(f"staging_uri must be a gs:// URI, got {spec.staging_uri!r}")
        return spec


def _serving_id(endpoint: dict[str, Any]) -> str | None:
    """The deployed model taking the largest share of an endpoint's traffic, if any."""
    traffic = {k: int(v) for k, v in endpoint.get("traffic_split", {}).items()}
    return max(traffic, key=traffic.get) if traffic else None


def _as_dict(message) -> dict[str, Any]:
    from google.protobuf import json_format

    return json_format.MessageToDict(type(message).pb(message), preserving_proto_field_name=True)


class VertexTarget(DeployTarget):
    kind = "vertex"

    def __init__(self, endpoint: str, conn_id: str | None = None, settings: dict[str, Any] | None = None,
                 conn_extras: dict[str, Any] | None = None):
        super().__init__(endpoint, conn_id, settings)
        self.spec = VertexSpec.from_settings({**(conn_extras or {}), **self.settings})

    @classmethod
    def from_connection(cls, endpoint: str, conn_id: str | None, conn, settings: dict[str, Any]) -> VertexTarget:
        return cls(endpoint, conn_id, settings, dict(conn.extra_dejson) if conn is not None else {})

    # ------------------------------------------------------------------ API access
    def _endpoints(self):
        from airflow.providers.google.cloud.hooks.vertex_ai.endpoint_service import EndpointServiceHook

        return EndpointServiceHook(gcp_conn_id=self.spec.gcp_conn_id)

    def _endpoint(self) -> dict[str, Any]:
        found = self._endpoints().get_endpoint(project_id=self.spec.project_id, region=self.spec.region,
                                               endpoint=self.spec.endpoint_id)
        return _as_dict(found)

    def _models_by_id(self, endpoint: dict[str, Any]) -> dict[str, dict[str, Any]]:
        return {d["id"]: d for d in endpoint.get("deployed_models", [])}

    def _version_of(self, deployed: dict[str, Any]) -> tuple[str | None, str]:
        from airflow.providers.google.cloud.hooks.vertex_ai.model_service import ModelServiceHook

        model_id = deployed["model"].rsplit("/", 1)[-1]
        model = _as_dict(ModelServiceHook(gcp_conn_id=self.spec.gcp_conn_id).get_model(
            project_id=self.spec.project_id, region=self.spec.region, model_id=model_id))
        env = {e["name"]: e.get("value", "") for e in model.get("container_spec", {}).get("env", [])}
        return model.get("labels", {}).get(VERSION_LABEL), env.get(URI_ENV, "")

    def _split(self, traffic: dict[str, int]) -> None:
        self._endpoints().update_endpoint(project_id=self.spec.project_id, region=self.spec.region,
                                          endpoint_id=self.spec.endpoint_id, endpoint={"traffic_split": traffic},
                                          update_mask={"paths": ["traffic_split"]})

    def _undeploy(self, deployed_model_id: str, traffic: dict[str, int] | None = None) -> None:
        self._endpoints().undeploy_model(project_id=self.spec.project_id, region=self.spec.region,
                                         endpoint=self.spec.endpoint_id, deployed_model_id=deployed_model_id,
                                         traffic_split=traffic).result(timeout=1800)

    # ------------------------------------------------------------------ interface
    def current(self) -> Served | None:
        endpoint = self._endpoint()
        serving_id = _serving_id(endpoint)
        if serving_id is None:
            return None
        deployed = self._models_by_id(endpoint).get(serving_id)
        if deployed is None:
            return None
        version, uri = self._version_of(deployed)
        return Served(version, uri) if version else None

    def deploy(self, served: Served) -> dict[str, Any]:
        from airflow.providers.google.cloud.hooks.vertex_ai.model_service import ModelServiceHook
        from google.api_core.exceptions import GoogleAPICallError

        unique = f"v{served.version}-{short_id(served.uri)}"
        artifact_uri = served.uri.rstrip("/")
        if not artifact_uri.startswith("gs://"):
            if not self.spec.staging_uri:
                raise DeployRefusedError(f"{served.uri} is not in GCS and no staging_uri is set: Vertex AI reads "
                                         f"models from gs:// only")
            artifact_uri = f"{self.spec.staging_uri.rstrip('/')}/{cloud_name(self.endpoint, unique)}"
            from ml import artifacts

            artifacts.copy_verified(served.uri, artifact_uri, kind="model")
        endpoint = self._endpoint()
        previous = _serving_id(endpoint)
        canary = int(self.spec.canary_percent) if previous else 100
        try:
            upload = ModelServiceHook(gcp_conn_id=self.spec.gcp_conn_id).upload_model(
                project_id=self.spec.project_id, region=self.spec.region, model={
                    "display_name": cloud_name(self.endpoint, unique),
                    "artifact_uri": artifact_uri,
                    "labels": {VERSION_LABEL: served.version, "ml-endpoint": cloud_name(self.endpoint, limit=63).lower()},
                    "container_spec": {"image_uri": self.spec.image, "ports": [{"container_port": 8080}],
                                       "env": [{"name": "ML_SERVE_MODEL_VERSION", "value": served.version},
                                               {"name": URI_ENV, "value": served.uri}]}})
            model_name = _as_dict(upload.result(timeout=1800))["model"]
            split = {"0": canary, **({previous: 100 - canary} if previous and canary < 100 else {})}
            operation = self._endpoints().deploy_model(
                project_id=self.spec.project_id, region=self.spec.region, endpoint=self.spec.endpoint_id,
                deployed_model={"model": model_name, "display_name": cloud_name(self.endpoint, unique),
                                "dedicated_resources": {"machine_spec": {"machine_type": self.spec.machine_type},
                                                        "min_replica_count": int(self.spec.min_replica_count),
                                                        "max_replica_count": int(self.spec.max_replica_count)}},
                traffic_split=split)
        except GoogleAPICallError as exc:
            if exc.code is not None and 400 <= int(exc.code) < 500:
                raise DeployRefusedError(f"Vertex AI refused version {served.version}: {exc}") from None
            raise
        return self.handle(version=served.version, uri=served.uri, operation=operation.operation.name,
                           model=model_name, previous_deployed_model=previous, canary_percent=canary,
                           project_id=self.spec.project_id, region=self.spec.region,
                           endpoint_id=self.spec.endpoint_id, gcp_conn_id=self.spec.gcp_conn_id,
                           facts={"model": model_name, "artifact_uri": artifact_uri, "traffic_split": split})

    @classmethod
    async def status(cls, handle: dict[str, Any]) -> DeployStatus:
        """The DeployModel operation, asked in a thread (the provider's Vertex hooks are synchronous)."""
        return await asyncio.to_thread(cls._status_now, handle)

    @classmethod
    def _status_now(cls, handle: dict[str, Any]) -> DeployStatus:
        from airflow.providers.google.cloud.hooks.vertex_ai.endpoint_service import EndpointServiceHook

        hook = EndpointServiceHook(gcp_conn_id=handle["gcp_conn_id"])
        client = hook.get_endpoint_service_client(handle["region"])
        operation = client.get_operation(request={"name": handle["operation"]})
        if not operation.done:
            return DeployStatus("progressing", "DeployModel is running")
        if operation.HasField("error") and operation.error.code:
            return DeployStatus("failed", f"DeployModel failed ({operation.error.code}): {operation.error.message}")
        endpoint = _as_dict(hook.get_endpoint(project_id=handle["project_id"], region=handle["region"],
                                              endpoint=handle["endpoint_id"]))
        ids = [d["id"] for d in endpoint.get("deployed_models", []) if d["model"] == handle["model"]]
        taking = [i for i in ids if int(endpoint.get("traffic_split", {}).get(i, 0)) > 0]
        if not taking:
            return DeployStatus("failed", f"{handle['model']} is deployed but takes no traffic (someone changed the "
                                          f"traffic split of endpoint {handle['endpoint_id']})")
        return DeployStatus("serving", version=handle["version"])

    def invoke(self, rows: list) -> dict[str, Any]:
        """Predict through the endpoint. While a canary takes a share of traffic, ask until the
        new deployed model answers (Vertex splits at random), so the smoke test tests it."""
        from airflow.providers.google.cloud.hooks.vertex_ai.prediction_service import PredictionServiceHook
        from google.api_core.exceptions import GoogleAPICallError

        from operators.deploy.endpoint_client import EndpointError

        # Not hook.predict: it passes the rows inside a request mapping, which proto-plus 1.29 refuses
        # for PredictRequest's repeated Value field ("instances is not iterable"); the client's
        # keyword form extends the field instead.
        client = PredictionServiceHook(gcp_conn_id=self.spec.gcp_conn_id).get_prediction_service_client(self.spec.region)
        path = f"projects/{self.spec.project_id}/locations/{self.spec.region}/endpoints/{self.spec.endpoint_id}"
        wanted = (self.in_flight or {}).get("model")
        deployed = self._models_by_id(self._endpoint())
        versions: dict[str, str | None] = {}
        for _ in range(SMOKE_ATTEMPTS if wanted else 1):
            try:
                answer = _as_dict(client.predict(endpoint=path, instances=rows, timeout=60))
            except GoogleAPICallError as exc:
                raise EndpointError(f"Vertex AI predict on endpoint {self.spec.endpoint_id}: {exc}",
                                    int(exc.code) if exc.code else None) from None
            answered = deployed.get(answer.get("deployed_model_id"))
            if answered is None:  # deployed since we looked
                deployed = self._models_by_id(self._endpoint())
                answered = deployed.get(answer.get("deployed_model_id"), {"id": None, "model": None})
            if answered["id"] not in versions:
                versions[answered["id"]] = self._version_of(answered)[0] if answered["model"] else None
            if not wanted or answered["model"] == wanted:
                return {"predictions": answer.get("predictions", []), "model_version": versions[answered["id"]]}
        raise EndpointError(f"the new model did not answer in {SMOKE_ATTEMPTS} predictions")

    def confirm(self, served: Served, **facts: Any) -> None:
        """After the smoke test: the new deployed model takes 100 %, the ones before are undeployed."""
        endpoint = self._endpoint()
        model = (self.in_flight or {}).get("model")
        new = [d["id"] for d in endpoint.get("deployed_models", []) if d["model"] == model]
        if not new:
            return
        self._split({new[0]: 100})
        for old in self._models_by_id(endpoint):
            if old != new[0]:
                self._undeploy(old)

    def rollback(self, previous: Served) -> dict[str, Any]:
        """The previous deployed model gets its 100 % back; the new one is undeployed."""
        handle = self.in_flight or {}
        before = handle.get("previous_deployed_model")
        endpoint = self._endpoint()
        deployed = self._models_by_id(endpoint)
        if not before or before not in deployed:
            raise RuntimeError(f"the deployed model that served version {previous.version} is gone from endpoint "
                               f"{self.spec.endpoint_id}; deploy version {previous.version} again")
        self._split({before: 100})
        undeployed = [i for i, d in deployed.items() if d["model"] == handle.get("model")]
        for new in undeployed:
            self._undeploy(new)
        return {"action": "traffic back to the previous deployed model", "deployed_model": before,
                "undeployed": undeployed}
