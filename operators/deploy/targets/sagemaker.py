"""The SageMaker target: model.tar.gz -> Model -> EndpointConfig -> Endpoint, through the amazon
provider's hooks (connection ``aws_conn_id``).

A deploy packs the verified artifact as ``model.tar.gz`` (byte-identical for the same model),
creates a Model of the serving image (which runs ``serve`` with the model in ``/opt/ml/model``:
SageMaker's bring-your-own-container contract), a *new* EndpointConfig per version, and creates
or updates the Endpoint, optionally blue/green with canary or linear traffic shifting and
CloudWatch alarms that roll it back by themselves.

"Serving" means InService **on the new EndpointConfig**: a failed update returns the endpoint
to InService on the old config, which a status-only waiter would take for success. Rolling
back is UpdateEndpoint to the previous config (kept in the handle); the smoke test goes through
InvokeEndpoint, the path clients use.

Settings (the endpoint connection's extras, overridden by the DAG's): ``image`` (serving image
in ECR), ``role_arn`` (execution role), ``model_data_prefix`` (``s3://bucket/prefix`` for the
tarballs), ``aws_conn_id``, ``region_name``, ``instance_type``, ``instance_count``,
``endpoint_name``, and for blue/green ``traffic_routing`` (``all_at_once``, ``canary``,
``linear``), ``canary_percent``, ``linear_step_percent``, ``traffic_wait_seconds``,
``termination_wait_seconds``, ``rollback_alarms`` (CloudWatch alarm names).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from operators.deploy.targets.base import DeployRefusedError, DeployStatus, DeployTarget, Served, spec_from_settings
from operators.deploy.targets.model_package import cloud_name, model_tarball, short_id

VERSION_ENV, URI_ENV = "ML_SERVE_MODEL_VERSION", "ML_MODEL_SOURCE_URI"  # on the Model's container
PROGRESSING = ("Creating", "Updating", "SystemUpdating", "RollingBack")
ROUTINGS = ("all_at_once", "canary", "linear")


@dataclass(frozen=True)
class SageMakerSpec:
    image: str = ""
    role_arn: str = ""
    model_data_prefix: str = ""
    aws_conn_id: str = "aws_default"
    region_name: str | None = None
    endpoint_name: str | None = None
    instance_type: str = "ml.m5.large"
    instance_count: int = 1
    traffic_routing: str = "all_at_once"
    canary_percent: int = 10
    linear_step_percent: int = 25
    traffic_wait_seconds: int = 300
    termination_wait_seconds: int = 0
    rollback_alarms: tuple[str, ...] = field(default_factory=tuple)

    @classmethod
    def from_settings(cls, settings: dict[str, Any]) -> SageMakerSpec:
        values = dict(settings)
        if "rollback_alarms" in values:
            values["rollback_alarms"] = tuple(values["rollback_alarms"] or ())
        spec = spec_from_settings(cls, values, "SageMaker", ("image", "role_arn", "model_data_prefix"))
        if not spec.model_data_prefix.startswith("s3://"):
            raise ValueError(f"model_data_prefix must be an s3:// URI, got {spec.model_data_prefix!r}")
        if spec.traffic_routing not in ROUTINGS:
            raise ValueError(f"traffic_routing must be one of {ROUTINGS}, got {spec.traffic_routing!r}")
        for name in ("canary_percent", "linear_step_percent"):
            if not 1 <= int(getattr(spec, name)) <= 99:
                raise ValueError(f"{name} must be between 1 and 99, got {getattr(spec, name)}")
        return spec

    def deployment_config(self) -> dict[str, Any] | None:
        """UpdateEndpoint's DeploymentConfig: blue/green traffic shifting and alarm rollback."""
        if self.traffic_routing == "all_at_once" and not self.rollback_alarms:
            return None
        routing: dict[str, Any] = {"Type": self.traffic_routing.upper(), "WaitIntervalInSeconds": int(self.traffic_wait_seconds)}
        if self.traffic_routing == "canary":
            routing["CanarySize"] = {"Type": "CAPACITY_PERCENT", "Value": int(self.canary_percent)}
        elif self.traffic_routing == "linear":
            routing["LinearStepSize"] = {"Type": "CAPACITY_PERCENT", "Value": int(self.linear_step_percent)}
        config: dict[str, Any] = {"BlueGreenUpdatePolicy": {
            "TrafficRoutingConfiguration": routing, "TerminationWaitInSeconds": int(self.termination_wait_seconds)}}
        if self.rollback_alarms:
            config["AutoRollbackConfiguration"] = {"Alarms": [{"AlarmName": a} for a in self.rollback_alarms]}
        return config


def _error_code(exc: Exception) -> str:
    return getattr(exc, "response", {}).get("Error", {}).get("Code", "")


def _not_found(exc: Exception) -> bool:
    message = str(getattr(exc, "response", {}).get("Error", {}).get("Message", ""))
    return _error_code(exc) in ("ValidationException", "ValidationError") and "Could not find" in message


class SageMakerTarget(DeployTarget):
    kind = "sagemaker"

    def __init__(self, endpoint: str, conn_id: str | None = None, settings: dict[str, Any] | None = None,
                 conn_extras: dict[str, Any] | None = None):
        super().__init__(endpoint, conn_id, settings)
        asked = dict(self.settings)
        if "canary_percent" in asked and "traffic_routing" not in asked:  # a canary asked per run (Param)
            asked["traffic_routing"] = "canary"
        self.spec = SageMakerSpec.from_settings({**(conn_extras or {}), **asked})
        self.endpoint_name = self.spec.endpoint_name or cloud_name("ml", endpoint)

    @classmethod
    def from_connection(cls, endpoint: str, conn_id: str | None, conn, settings: dict[str, Any]) -> SageMakerTarget:
        return cls(endpoint, conn_id, settings, dict(conn.extra_dejson) if conn is not None else {})

    # ------------------------------------------------------------------ API access
    def _hook(self):
        from airflow.providers.amazon.aws.hooks.sagemaker import SageMakerHook

        return SageMakerHook(aws_conn_id=self.spec.aws_conn_id, region_name=self.spec.region_name)

    def _describe_endpoint(self, hook) -> dict[str, Any] | None:
        from botocore.exceptions import ClientError

        try:
            return hook.describe_endpoint(self.endpoint_name)
        except ClientError as exc:
            if _not_found(exc):
                return None
            raise

    def names(self, served: Served) -> tuple[str, str]:
        """(Model name, EndpointConfig name) of a version: the same version and URI always give
        the same names, so a retried deploy reuses what the first try created."""
        unique = f"v{served.version}-{short_id(served.uri)}"
        return cloud_name(self.endpoint_name, unique), cloud_name(self.endpoint_name, unique, "cfg")

    def _ensure_config(self, hook, served: Served) -> tuple[str, dict[str, Any]]:
        """Model data in S3, the Model and the EndpointConfig of ``served``; returns the config name."""
        from botocore.exceptions import ClientError

        model_name, config_name = self.names(served)
        facts: dict[str, Any] = {"model": model_name, "endpoint_config": config_name}
        try:
            hook.describe_endpoint_config(config_name)
            return config_name, {**facts, "reused": True}
        except ClientError as exc:
            if not _not_found(exc):
                raise
        facts["model_data"] = model_data = self._upload(hook, served)
        try:
            hook.create_model({
                "ModelName": model_name, "ExecutionRoleArn": self.spec.role_arn,
                "PrimaryContainer": {"Image": self.spec.image, "ModelDataUrl": model_data, "Mode": "SingleModel",
                                     "Environment": {VERSION_ENV: served.version, URI_ENV: served.uri}},
                "Tags": [{"Key": "ml-pipelines:endpoint", "Value": self.endpoint}],
            })
        except ClientError as exc:
            if "already exist" not in str(exc):
                raise
        hook.create_endpoint_config({
            "EndpointConfigName": config_name,
            "ProductionVariants": [{"VariantName": "AllTraffic", "ModelName": model_name,
                                    "InstanceType": self.spec.instance_type,
                                    "InitialInstanceCount": int(self.spec.instance_count),
                                    "InitialVariantWeight": 1.0}],
            "Tags": [{"Key": "ml-pipelines:version", "Value": served.version}],
        })
        return config_name, facts

    def _upload(self, hook, served: Served) -> str:
        """``model.tar.gz`` of the verified artifact under ``model_data_prefix``; neither packed
        nor re-sent when that key (named by the artifact's digest) already holds it."""
        from ml import artifacts

        digest = artifacts.read_manifest(served.uri, kind="model").digest
        bucket, _, prefix = self.spec.model_data_prefix[len("s3://"):].partition("/")
        key = "/".join(p for p in (prefix.strip("/"), self.endpoint_name, f"v{served.version}-{digest[:12]}",
                                   "model.tar.gz") if p)
        if not hook.s3_hook.check_for_key(key, bucket):
            tarball, _ = model_tarball(served.uri)  # verifies every file before anything leaves
            with tarball:
                hook.s3_hook.load_file_obj(tarball, key, bucket, replace=True)
        return f"s3://{bucket}/{key}"

    # ------------------------------------------------------------------ interface
    def current(self) -> Served | None:
        hook = self._hook()
        found = self._describe_endpoint(hook)
        if found is None:
            return None
        config = hook.describe_endpoint_config(found["EndpointConfigName"])
        model = hook.describe_model(config["ProductionVariants"][0]["ModelName"])
        env = (model.get("PrimaryContainer") or {}).get("Environment") or {}
        if VERSION_ENV not in env:
            return None
        return Served(env[VERSION_ENV], env.get(URI_ENV, ""), live=found["EndpointStatus"] == "InService")

    def deploy(self, served: Served) -> dict[str, Any]:
        from botocore.exceptions import ClientError

        hook = self._hook()
        found = self._describe_endpoint(hook)
        if found is not None and found["EndpointStatus"] in PROGRESSING + ("Deleting",):
            raise DeployRefusedError(f"endpoint {self.endpoint_name} is {found['EndpointStatus']}: another change is "
                                     f"in progress; deploy again when it is InService")
        try:
            config_name, facts = self._ensure_config(hook, served)
            if found is None:
                hook.create_endpoint({"EndpointName": self.endpoint_name, "EndpointConfigName": config_name,
                                      "Tags": [{"Key": "ml-pipelines:endpoint", "Value": self.endpoint}]},
                                     wait_for_completion=False)
                facts["action"] = "CreateEndpoint"
            else:
                request: dict[str, Any] = {"EndpointName": self.endpoint_name, "EndpointConfigName": config_name}
                if self.spec.deployment_config():
                    request["DeploymentConfig"] = self.spec.deployment_config()
                hook.update_endpoint(request, wait_for_completion=False)
                facts["action"] = "UpdateEndpoint"
        except ClientError as exc:
            if _error_code(exc) in ("ValidationException", "ValidationError", "ResourceLimitExceeded"):
                raise DeployRefusedError(f"SageMaker refused version {served.version}: {exc}") from None
            raise
        return self.handle(version=served.version, uri=served.uri, endpoint_name=self.endpoint_name,
                           endpoint_config=config_name,
                           previous_config=found["EndpointConfigName"] if found is not None else None,
                           aws_conn_id=self.spec.aws_conn_id, region_name=self.spec.region_name, facts=facts)

    @classmethod
    async def status(cls, handle: dict[str, Any]) -> DeployStatus:
        from airflow.providers.amazon.aws.hooks.sagemaker import SageMakerHook

        hook = SageMakerHook(aws_conn_id=handle["aws_conn_id"], region_name=handle.get("region_name"))
        async with await hook.get_async_conn() as client:
            found = await client.describe_endpoint(EndpointName=handle["endpoint_name"])
        return endpoint_status(found, handle["endpoint_config"], handle["version"])

    def invoke(self, rows: list) -> dict[str, Any]:
        from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook
        from botocore.exceptions import ClientError

        from operators.deploy.endpoint_client import EndpointError

        runtime = AwsBaseHook(aws_conn_id=self.spec.aws_conn_id, client_type="sagemaker-runtime",
                              region_name=self.spec.region_name).conn
        try:
            answer = runtime.invoke_endpoint(EndpointName=self.endpoint_name, ContentType="application/json",
                                             Accept="application/json", Body=json.dumps({"instances": rows}))
        except ClientError as exc:
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            raise EndpointError(f"InvokeEndpoint {self.endpoint_name}: {exc}", status) from None
        body = answer["Body"].read()
        try:
            return json.loads(body)
        except ValueError:
            raise EndpointError(f"InvokeEndpoint {self.endpoint_name} answered non-JSON: {body[:200]!r}") from None

    def rollback(self, previous: Served) -> dict[str, Any]:
        """UpdateEndpoint back to the previous version's config (no blue/green: the fastest way
        back). Nothing to do when a failed update already left the endpoint on it."""
        hook = self._hook()
        config_name = (self.in_flight or {}).get("previous_config") or self._ensure_config(hook, previous)[0]
        found = self._describe_endpoint(hook)
        if found is None:
            raise RuntimeError(f"endpoint {self.endpoint_name} no longer exists; deploy version {previous.version} again")
        if found["EndpointConfigName"] == config_name and found["EndpointStatus"] == "InService":
            return {"action": "none: the endpoint is InService on the previous config", "endpoint_config": config_name}
        hook.update_endpoint({"EndpointName": self.endpoint_name, "EndpointConfigName": config_name},
                             wait_for_completion=False)
        return {"action": "UpdateEndpoint to the previous config", "endpoint_config": config_name,
                "version": previous.version}


def endpoint_status(found: dict[str, Any], config_name: str, version: str) -> DeployStatus:
    """Where a deploy to config ``config_name`` stands, from DescribeEndpoint's answer."""
    state, reason = found["EndpointStatus"], found.get("FailureReason") or ""
    on = found.get("EndpointConfigName")
    if state in PROGRESSING:
        return DeployStatus("progressing", f"endpoint is {state}")
    if state == "InService":
        if on == config_name:
            return DeployStatus("serving", version=version)
        return DeployStatus("failed", f"the update did not take: the endpoint is InService on {on}, not {config_name}"
                                      f"{': ' + reason if reason else ''}")
    return DeployStatus("failed", f"endpoint is {state}{': ' + reason if reason else ''}")
