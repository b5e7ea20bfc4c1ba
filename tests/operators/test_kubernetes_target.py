"""The Kubernetes deploy target: objects validated against the 1.37 schemas, rollout status on
API-shaped objects (tests/fixtures/kubernetes), and the apply/rollback calls as they leave the
provider hook's API client (no cluster runs here; tests/containers runs the objects under podman).
"""

from __future__ import annotations

import asyncio
import copy
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from unittest import mock

import kubernetes_validate
import pytest
import yaml

from operators.deploy.targets import DeployRefusedError, Served, get_target, target_from_handle
from operators.deploy.targets.kubernetes import KubernetesTarget
from operators.deploy.targets.kubernetes_manifests import EndpointSpec, endpoint_objects, resource_name
from operators.deploy.targets.kubernetes_rollout import rollout_status

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "kubernetes"
V1 = Served("1", "s3://ml/models/churn/interval=1")
V2 = Served("2", "s3://ml/models/churn/interval=2")
SETTINGS = {"image": "registry.example/ml-serving:0.1.0", "service_level": "production",
            "env_from_secrets": ["ml-storage-credentials"]}


def scenario(name: str):
    """(deployment, replica sets, pods) of a fixture, the shared Deployment with its status."""
    common = yaml.safe_load((FIXTURES / "common.yaml").read_text())
    case = yaml.safe_load((FIXTURES / f"{name}.yaml").read_text())
    deployment = copy.deepcopy(common["deployment"])
    deployment["status"] = case["deployment_status"]
    return deployment, common["replica_sets"], case["pods"]


# ---------------------------------------------------------------------------------------- objects
@pytest.mark.parametrize("level", ["development", "staging", "production"])
def test_every_object_validates_strictly_against_the_1_37_schemas(level):
    spec = EndpointSpec.from_settings({**SETTINGS, "service_level": level,
                                       "autoscale": {"min": 2, "max": 6, "cpu_percent": 60},
                                       "volumes": [{"name": "models", "persistentVolumeClaim": {"claimName": "ml"}}],
                                       "volume_mounts": [{"name": "models", "mountPath": "/data", "readOnly": True}]})
    objects = endpoint_objects("churn", V2.version, V2.uri, spec)
    assert [o["kind"] for o in objects] == ["Deployment", "Service", "PodDisruptionBudget", "HorizontalPodAutoscaler"]
    for obj in objects:
        kubernetes_validate.validate(obj, "1.37", strict=True)
    assert {o["metadata"]["namespace"] for o in objects} == {f"ml-{level}"}
    assert all(o["metadata"]["labels"]["ml-pipelines.io/service-level"] == level for o in objects)
    assert "replicas" not in objects[0]["spec"]  # the HPA owns the count


def test_the_deployment_carries_the_model_probes_rolling_update_and_graceful_stop():
    spec = EndpointSpec.from_settings(SETTINGS)
    deployment, svc, pdb = endpoint_objects("churn", V2.version, V2.uri, spec)
    pod = deployment["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    assert container["args"] == ["--model", V2.uri, "--model-version", "2"]
    assert pod["metadata"]["annotations"]["ml-pipelines.io/model-version"] == "2"  # a new version rolls out
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": "/ping", "port": "http"}
    assert deployment["spec"]["replicas"] == 3  # production
    assert deployment["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}
    assert deployment["spec"]["minReadySeconds"] == 5 and deployment["spec"]["progressDeadlineSeconds"] == 300
    stop = container["lifecycle"]["preStop"]["exec"]["command"]
    assert stop == ["sleep", "5"] and pod["spec"]["terminationGracePeriodSeconds"] >= 5 + 10  # preStop + drain
    assert container["envFrom"] == [{"secretRef": {"name": "ml-storage-credentials"}}]
    # the Service selects stable and canary pods alike; the Deployment only its own track
    assert svc["spec"]["selector"].items() < deployment["spec"]["selector"]["matchLabels"].items()
    assert pdb["spec"]["selector"]["matchLabels"] == svc["spec"]["selector"] and pdb["spec"]["maxUnavailable"] == 1


def test_bad_settings_are_refused_with_what_is_allowed():
    with pytest.raises(ValueError, match=r"unknown kubernetes endpoint settings \['replica'\]"):
        EndpointSpec.from_settings({"replica": 2})
    with pytest.raises(ValueError, match="service_level 'prod' is not one of"):
        EndpointSpec.from_settings({"service_level": "prod"})
    assert resource_name("Churn_Model.v2") == "ml-churn-model-v2" and resource_name("ml-x") == "ml-x"


# ---------------------------------------------------------------------------------------- rollout
NOW = datetime(2026, 11, 23, 10, 2, 0, tzinfo=timezone.utc)


def test_a_complete_rollout_is_serving():
    status = rollout_status(*scenario("complete"), now=NOW)
    assert status.state == "serving" and "successfully rolled out (3/3 available)" in status.reason


def test_a_rollout_the_controller_has_not_observed_is_progressing():
    deployment, replica_sets, pods = scenario("complete")
    deployment["status"]["observedGeneration"] = 1
    status = rollout_status(deployment, replica_sets, pods, now=NOW)
    assert status.state == "progressing" and "observe generation 2" in status.reason


@pytest.mark.parametrize("name,reason", [
    ("image_pull", 'image pull error in pod ml-churn-5d8f7b4c9b-q9wzt, container serving (ImagePullBackOff): '
                   'Back-off pulling image "registry.example/ml-serving:0.2.0-typo"'),
    ("crash_loop", "crash loop in pod ml-churn-5d8f7b4c9b-m4d8r, container serving: restarted 3 times, "
                   "last exit code 2 (Error)"),
    ("progress_deadline", 'ProgressDeadlineExceeded: ReplicaSet "ml-churn-5d8f7b4c9b" has timed out progressing.'),
])
def test_failures_that_will_not_heal_fail_with_the_reason(name, reason):
    status = rollout_status(*scenario(name), now=NOW)
    assert status.state == "failed" and status.reason.startswith(reason)


def test_a_pod_that_never_gets_ready_fails_after_the_readiness_timeout_only():
    started = datetime(2026, 11, 23, 10, 1, 4, tzinfo=timezone.utc)
    early = rollout_status(*scenario("readiness_timeout"), readiness_timeout=180, now=started + timedelta(seconds=60))
    assert early.state == "progressing" and early.reason == (
        "waiting for deployment ml-churn rollout to finish: 1 out of 3 new replicas have been updated")
    late = rollout_status(*scenario("readiness_timeout"), readiness_timeout=180, now=started + timedelta(seconds=181))
    assert late.state == "failed" and late.reason.startswith(
        "readiness timeout: pod ml-churn-5d8f7b4c9b-h2v6n, container serving has run 181s")


def test_failing_pods_of_the_old_replica_set_do_not_fail_the_new_rollout():
    deployment, replica_sets, pods = scenario("crash_loop")
    pods[0]["metadata"]["ownerReferences"][0]["name"] = "ml-churn-7c5b9d6f84"  # revision 1's pod
    assert rollout_status(deployment, replica_sets, pods, now=NOW).state == "progressing"


def test_the_waiting_message_says_what_the_rollout_waits_for():
    deployment, replica_sets, pods = scenario("complete")
    status = deployment["status"]
    status.update(replicas=4, updatedReplicas=3, readyReplicas=3, availableReplicas=3)
    assert rollout_status(deployment, replica_sets, [], now=NOW).reason.endswith(
        "1 old replicas are pending termination")
    status.update(replicas=3, availableReplicas=2, unavailableReplicas=1)
    status["conditions"] = [{"type": "ReplicaFailure", "status": "True", "reason": "FailedCreate",
                             "message": 'pods "ml-churn-x" is forbidden: exceeded quota'}]
    waiting = rollout_status(deployment, replica_sets, [], now=NOW)
    assert waiting.state == "progressing"  # a quota may clear by itself before the progress deadline
    assert waiting.reason.endswith("2 of 3 updated replicas are available (FailedCreate: pods \"ml-churn-x\" is "
                                   "forbidden: exceeded quota)")


def test_a_container_that_cannot_start_fails_the_rollout_at_once():
    deployment, replica_sets, pods = scenario("crash_loop")
    (container,) = pods[0]["status"]["containerStatuses"]
    container["state"] = {"waiting": {"reason": "CreateContainerConfigError",
                                      "message": 'secret "ml-storage-credentials" not found'}}
    status = rollout_status(deployment, replica_sets, pods, now=NOW)
    assert status.state == "failed" and status.reason == (
        f"container serving of pod {pods[0]['metadata']['name']} cannot start (CreateContainerConfigError): "
        'secret "ml-storage-credentials" not found')


# ---------------------------------------------------------------------------------------- the hook
class FakeApiServer:
    """Stands behind the provider hook's ApiClient: records each call as it would go on the wire
    and answers like the API server (server-side apply returns the object with a generation)."""

    def __init__(self, existing: dict | None = None):
        self.calls: list[dict] = []
        self.existing = existing or {}
        self.errors: dict[tuple[str, str], tuple[int, str]] = {}  # (method, path) -> (status, body)

    def call_api(self, resource_path, method, path_params=None, query_params=None, header_params=None, body=None,
                 **kwargs):
        path = resource_path.format(**(path_params or {}))
        self.calls.append({"path": path, "method": method, "query": dict(query_params or []),
                           "content_type": (header_params or {}).get("Content-Type"), "body": body})
        from kubernetes.client.exceptions import ApiException

        if (method, path) in self.errors:
            status, text = self.errors[method, path]
            exc = ApiException(status=status, reason="Error")
            exc.body = text
            raise exc
        if method == "GET":
            if path in self.existing:
                return self._typed(self.existing[path], kwargs.get("response_type")
                                   or (kwargs.get("response_types_map") or {}).get(200))
            raise ApiException(status=404, reason="Not Found")
        if method == "PATCH" and body.get("metadata", {}).get("labels", {}).get("reject"):
            raise ApiException(status=422, reason="Unprocessable Entity")
        if method == "PATCH":
            return {**body, "metadata": {**body["metadata"], "generation": 4}}
        return {}

    @staticmethod
    def _typed(obj, response_type):
        from operators.training.train_pod import kubernetes_object

        return kubernetes_object(obj, response_type) if response_type else obj


@pytest.fixture
def api_server(monkeypatch):
    from airflow.providers.cncf.kubernetes.hooks.kubernetes import KubernetesHook
    from kubernetes.client import ApiClient

    from kubernetes.client import Configuration

    lenient = Configuration()
    lenient.client_side_validation = False  # the fixtures hold only the fields a decision reads
    monkeypatch.setattr(Configuration, "_default", lenient)
    server = FakeApiServer()
    client = ApiClient()
    monkeypatch.setattr(client, "call_api", server.call_api)
    monkeypatch.setattr(KubernetesHook, "get_conn", lambda self: client)
    monkeypatch.setenv("AIRFLOW_CONN_ML_ENDPOINT_K8S", json.dumps(
        {"conn_type": "generic", "extra": {"target": "kubernetes", "kubernetes_conn_id": "kube_prod", **SETTINGS}}))
    return server


APPLY_QUERY = {"fieldManager": "ml-pipelines", "force": True}


def test_deploy_is_a_server_side_apply_of_each_object_through_the_hook(api_server):
    target = get_target(None, "churn", "ml_endpoint_k8s")  # the connection's extra chose the target
    assert isinstance(target, KubernetesTarget) and target.kube_conn_id == "kube_prod"
    handle = target.deploy(V2)
    patches = [c for c in api_server.calls if c["method"] == "PATCH"]
    assert [c["path"] for c in patches] == [
        "/apis/apps/v1/namespaces/ml-production/deployments/ml-churn",
        "/api/v1/namespaces/ml-production/services/ml-churn",
        "/apis/policy/v1/namespaces/ml-production/poddisruptionbudgets/ml-churn"]
    assert all(c["content_type"] == "application/apply-patch+yaml" and c["query"] == APPLY_QUERY for c in patches)
    assert patches[0]["body"] == endpoint_objects("churn", "2", V2.uri, target.spec)[0]
    assert handle == {**handle, "kind": "kubernetes", "endpoint": "churn", "conn_id": "ml_endpoint_k8s",
                      "settings": {}, "version": "2", "uri": V2.uri, "namespace": "ml-production",
                      "deployment": "ml-churn", "track": "stable", "generation": 4, "kubernetes_conn_id": "kube_prod"}
    json.dumps(handle)  # travels to the triggerer as JSON


def test_rollback_re_applies_the_previous_version(api_server):
    target = target_from_handle(get_target(None, "churn", "ml_endpoint_k8s").deploy(V2))
    api_server.calls.clear()
    done = target.rollback(V1)
    (deployment,) = [c for c in api_server.calls if c["path"].endswith("/deployments/ml-churn")]
    assert deployment["method"] == "PATCH" and deployment["query"] == APPLY_QUERY
    assert deployment["body"]["spec"]["template"]["spec"]["containers"][0]["args"] == [
        "--model", V1.uri, "--model-version", "1"]
    assert done["action"] == "re-applied previous version" and done["version"] == "1"


def test_a_canary_goes_beside_the_stable_deployment_and_its_rollback_removes_it(api_server):
    stable = endpoint_objects("churn", "1", V1.uri, EndpointSpec.from_settings(SETTINGS))[0]
    api_server.existing["/apis/apps/v1/namespaces/ml-production/deployments/ml-churn"] = stable
    target = get_target(None, "churn", "ml_endpoint_k8s", {"canary_percent": 34})
    handle = target.deploy(V2)
    assert handle["track"] == "canary" and handle["deployment"] == "ml-churn-canary"
    (canary,) = [c for c in api_server.calls if c["method"] == "PATCH" and "deployments" in c["path"]]
    assert canary["path"].endswith("/deployments/ml-churn-canary") and canary["body"]["spec"]["replicas"] == 2
    kubernetes_validate.validate(canary["body"], "1.37", strict=True)
    assert target.current() == Served("1", V1.uri, live=False)  # stable untouched (its status is not complete)
    rebuilt = target_from_handle(handle)
    api_server.calls.clear()
    rebuilt.rollback(V1)
    assert [(c["method"], c["path"]) for c in api_server.calls] == [
        ("DELETE", "/apis/apps/v1/namespaces/ml-production/deployments/ml-churn-canary")]


def test_an_object_the_api_server_refuses_is_a_refused_deploy(api_server):
    target = get_target(None, "churn", "ml_endpoint_k8s")
    with mock.patch("operators.deploy.targets.kubernetes.endpoint_objects") as render:
        render.return_value = [{"kind": "Deployment", "metadata": {"name": "ml-churn", "namespace": "ml-production",
                                                                   "labels": {"reject": "yes"}}}]
        with pytest.raises(DeployRefusedError, match="refused Deployment ml-production/ml-churn \\(422"):
            target.deploy(V2)


def test_the_smoke_test_goes_through_the_api_server_proxy_to_the_service(api_server):
    target = get_target(None, "churn", "ml_endpoint_k8s")
    target.invoke([[1.0, 2.0]])
    (call,) = api_server.calls
    assert call["method"] == "POST" and call["body"] == {"instances": [[1.0, 2.0]]}
    assert call["path"] == "/api/v1/namespaces/ml-production/services/ml-churn:http/proxy/invocations"


@pytest.mark.parametrize("name,state", [("complete", "serving"), ("image_pull", "failed"), ("progress_deadline", "failed")])
def test_status_reads_the_rollout_and_decides(name, state, api_server):
    handle = get_target(None, "churn", "ml_endpoint_k8s").deploy(V2)

    async def read(h):
        assert h == handle
        return scenario(name)

    with mock.patch("operators.deploy.targets.kubernetes.read_rollout", read):
        status = asyncio.run(KubernetesTarget.status(handle))
    assert status.state == state and (status.version == "2") == (state == "serving")


def test_status_of_a_deployment_someone_else_changed_fails_as_superseded(api_server):
    handle = get_target(None, "churn", "ml_endpoint_k8s").deploy(V1)

    async def read(h):
        return scenario("complete")  # asks for version 2 now

    with mock.patch("operators.deploy.targets.kubernetes.read_rollout", read):
        status = asyncio.run(KubernetesTarget.status(handle))
    assert status.state == "failed" and "superseded" in status.reason and "version 2" in status.reason


def test_a_failed_rollout_is_rolled_back_by_the_deploy_operator_with_the_reason(api_server, make_context):
    """DeployModelOperator on the Kubernetes target: deploy, defer on the one trigger class,
    the rollout fails (image pull), the previous version is re-applied, the ledger says why."""
    from airflow.sdk.exceptions import AirflowException, TaskDeferred

    from operators.deploy.deploy_model import DeployModelOperator
    from tests.helpers import FakeTaskInstance

    stable = endpoint_objects("churn", "1", V1.uri, EndpointSpec.from_settings(SETTINGS))[0]
    stable["metadata"]["generation"] = 1
    stable["status"] = {"observedGeneration": 1, "replicas": 3, "updatedReplicas": 3, "readyReplicas": 3,
                        "availableReplicas": 3}
    api_server.existing["/apis/apps/v1/namespaces/ml-production/deployments/ml-churn"] = stable
    op = DeployModelOperator(task_id="deploy", model_name="churn", version="2", endpoint="churn",
                             target_conn_id="ml_endpoint_k8s", wait_timeout=30)
    context = make_context(run_id="deploy-2")
    context["ti"] = FakeTaskInstance()
    async def just_applied(handle):  # the controller has not observed generation 2 yet
        deployment, replica_sets, pods = scenario("complete")
        deployment["status"]["observedGeneration"] = 1
        return deployment, replica_sets, pods

    with mock.patch.object(DeployModelOperator, "_resolve", return_value=mock.Mock(version="2", source=V2.uri)), \
            mock.patch("operators.deploy.targets.kubernetes.read_rollout", just_applied):
        with pytest.raises(TaskDeferred) as deferred:
            op.execute(context)
    path, kwargs = deferred.value.trigger.serialize()
    assert path == "operators.deploy.trigger.DeployStatusTrigger" and kwargs["handle"]["kind"] == "kubernetes"

    async def read(handle):
        return scenario("image_pull")

    from operators.deploy.trigger import DeployStatusTrigger

    with mock.patch("operators.deploy.targets.kubernetes.read_rollout", read):
        event = asyncio.run(_first_event(DeployStatusTrigger(**json.loads(json.dumps(kwargs)))))
    assert event["status"] == "failed" and "ImagePullBackOff" in event["reason"]
    api_server.calls.clear()
    with pytest.raises(AirflowException, match="rolled back to 1: version 2 is not serving .*ImagePullBackOff"):
        op.verify(context, event)
    rollback = next(c for c in api_server.calls if c["path"].endswith("/deployments/ml-churn"))
    assert rollback["body"]["metadata"]["annotations"]["ml-pipelines.io/model-version"] == "1"
    ledger = context["ti"].xcom_pull(key="ledger")
    assert ledger["outcome"] == "rolled_back" and ledger["version"] == "1" and ledger["failed_version"] == "2"


async def _first_event(trigger):
    async for event in trigger.run():
        return event.payload


# ---------------------------------------------------------------------------------------- API errors and reads
DEPLOYMENT = "/apis/apps/v1/namespaces/ml-production/deployments/ml-churn"
PODS = "/api/v1/namespaces/ml-production/pods"


def test_what_serves_is_read_from_the_deployment_annotations(api_server):
    target = get_target(None, "churn", "ml_endpoint_k8s")
    assert target.current() is None  # no Deployment yet
    unmanaged = endpoint_objects("churn", "1", V1.uri, target.spec)[0]
    del unmanaged["metadata"]["annotations"]
    api_server.existing[DEPLOYMENT] = unmanaged
    assert target.current() is None  # a Deployment someone else made is not a served version
    api_server.existing[DEPLOYMENT] = scenario("complete")[0]
    assert target.current() == Served("2", "s3://ml/models/churn/interval=2", live=True)


def test_an_api_server_error_that_may_pass_is_raised_not_taken_for_a_refusal(api_server):
    from kubernetes.client.exceptions import ApiException

    target = get_target(None, "churn", "ml_endpoint_k8s")
    api_server.errors["PATCH", DEPLOYMENT] = (503, "etcdserver: leader changed")
    with pytest.raises(ApiException) as raised:
        target.deploy(V2)
    assert raised.value.status == 503 and not isinstance(raised.value, DeployRefusedError)
    api_server.errors["GET", DEPLOYMENT] = (500, "internal error")
    with pytest.raises(ApiException):
        target.current()  # not "nothing serves", which would make a rollback impossible


def test_a_canary_smoke_test_goes_to_a_ready_canary_pod_and_none_ready_is_an_endpoint_error(api_server):
    from operators.deploy.endpoint_client import EndpointError

    target = get_target(None, "churn", "ml_endpoint_k8s")
    target.in_flight = {"track": "canary"}
    api_server.existing[PODS] = {"items": [
        {"metadata": {"name": "ml-churn-canary-a"}, "status": {"conditions": [{"type": "Ready", "status": "False"}]}},
        {"metadata": {"name": "ml-churn-canary-b"}, "status": {"conditions": [{"type": "Ready", "status": "True"}]}}]}
    target.invoke([[1.0]])
    listing, call = api_server.calls
    assert listing["path"] == PODS and listing["query"]["labelSelector"].endswith("ml-pipelines.io/track=canary")
    assert call["path"] == "/api/v1/namespaces/ml-production/pods/ml-churn-canary-b:http/proxy/invocations"
    api_server.existing[PODS] = {"items": [{"metadata": {"name": "ml-churn-canary-a"}, "status": {}}]}
    with pytest.raises(EndpointError, match="no ready canary pod of ml-churn in ml-production"):
        target.invoke([[1.0]])


def test_an_error_answer_to_the_smoke_test_is_an_endpoint_error_with_its_status(api_server):
    from operators.deploy.endpoint_client import EndpointError

    target = get_target(None, "churn", "ml_endpoint_k8s")
    path = "/api/v1/namespaces/ml-production/services/ml-churn:http/proxy/invocations"
    api_server.errors["POST", path] = (503, "no endpoints available for service")
    with pytest.raises(EndpointError, match="answered 503: no endpoints available") as raised:
        target.invoke([[1.0]])
    assert raised.value.status == 503


@pytest.fixture
def async_api_server(api_server, monkeypatch):
    """The same fake behind the async hook the trigger uses (kubernetes_asyncio's ApiClient)."""
    import contextlib

    from airflow.providers.cncf.kubernetes.hooks.kubernetes import AsyncKubernetesHook
    from kubernetes_asyncio.client import ApiClient

    from kubernetes.client.exceptions import ApiException
    from kubernetes_asyncio.client.exceptions import ApiException as AsyncApiException

    async def call_api(*args, **kwargs):
        try:
            return api_server.call_api(*args, **kwargs)
        except ApiException as exc:  # as kubernetes_asyncio raises it
            raise AsyncApiException(status=exc.status, reason=exc.reason) from None

    @contextlib.asynccontextmanager
    async def get_conn(self):
        assert self.conn_id == "kube_prod"  # the handle's kube connection
        async with ApiClient() as client:  # made inside the loop, as the hook does
            client.call_api = call_api
            yield client

    monkeypatch.setattr(AsyncKubernetesHook, "get_conn", get_conn)
    return api_server


def test_the_trigger_reads_the_rollout_through_the_async_hook(async_api_server):
    handle = get_target(None, "churn", "ml_endpoint_k8s").deploy(V2)
    deployment, replica_sets, pods = scenario("image_pull")
    async_api_server.existing[DEPLOYMENT] = deployment
    async_api_server.existing["/apis/apps/v1/namespaces/ml-production/replicasets"] = {"items": replica_sets}
    async_api_server.existing[PODS] = {"items": pods}
    async_api_server.calls.clear()
    status = asyncio.run(KubernetesTarget.status(handle))
    assert status.state == "failed" and "ImagePullBackOff" in status.reason
    assert [c["path"] for c in async_api_server.calls] == [
        DEPLOYMENT, "/apis/apps/v1/namespaces/ml-production/replicasets", PODS]
    assert async_api_server.calls[2]["query"]["labelSelector"] == (
        "app.kubernetes.io/instance=ml-churn,app.kubernetes.io/name=ml-serving")
    del async_api_server.existing[DEPLOYMENT]  # deleted by hand mid-rollout
    status = asyncio.run(KubernetesTarget.status(handle))
    assert status.state == "failed" and "no longer exists" in status.reason


def test_the_open_inference_smoke_test_goes_over_the_proxy_for_rest_and_to_the_cluster_for_grpc(api_server):
    from operators.deploy import open_inference_client as oip

    target = get_target(None, "churn", "ml_endpoint_k8s")
    request = oip.infer_request("churn", "2", [{"f0": 1.5, "f1": None}], [{"name": "f0"}, {"name": "f1"}])
    from operators.deploy.endpoint_client import EndpointError

    with pytest.raises(EndpointError, match="the answer's id None is not the request's"):  # the fake answers {}
        target.infer(request, "v2")
    (call,) = api_server.calls
    assert call["path"] == "/api/v1/namespaces/ml-production/services/ml-churn:http/proxy/v2/models/churn/versions/2/infer"
    assert call["body"]["inputs"] == [{"name": "f0", "datatype": "FP64", "shape": [1], "data": [1.5]},
                                      {"name": "f1", "datatype": "FP64", "shape": [1], "data": [None]}]
    assert target._grpc_target() == "ml-churn.ml-production.svc:8081"  # HTTP/2 does not go through the proxy
    target.in_flight = {"track": "canary"}
    api_server.existing[PODS] = {"items": [{"metadata": {"name": "ml-churn-canary-b"}, "status": {
        "podIP": "10.1.2.3", "conditions": [{"type": "Ready", "status": "True"}]}}]}
    assert target._grpc_target() == "10.1.2.3:8081"  # the canary pod itself: the answer comes from the new version
    outside = get_target(None, "churn", "ml_endpoint_k8s", {"grpc_address": "churn-grpc.example:443"})
    assert outside._grpc_target() == "churn-grpc.example:443"
