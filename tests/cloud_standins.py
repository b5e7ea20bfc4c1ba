"""Stand-ins for cloud calls no emulator answers, substituted one call at a time.

moto's server mode answers the SageMaker control plane over real HTTP (boto3 and the amazon
provider's hooks talk to it unchanged). Two calls it lacks are substituted here, inside moto's
own process (``ThreadedMotoServer`` runs in the test process), and nothing else:
- **UpdateEndpoint**: moto 5.2.5 answers 500 "not implemented". The substitute records the
  request and ends the update as a test tells it: InService on the new config, still Updating, or
  SageMaker's failed update (back to InService on the *old* config, with a FailureReason).
- **a training job's run**: moto records CreateTrainingJob and reports it Completed at once,
  running nothing. The substitute runs the job's ``ContainerEntrypoint`` + ``ContainerArguments``
  with its ``Environment`` (as the training container would, on this machine's Python), and
  reports Failed with the ``/opt/ml/output/failure`` text, SageMaker's way, when it exits non-zero.
- **InvokeEndpoint**: moto answers canned text. The substitute forwards the body to a real
  ml.serve started as SageMaker starts the container: ``serve`` with the endpoint's
  ``model.tar.gz`` (read from moto's S3) unpacked as its model folder and the Model's container
  environment.
"""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


class SageMakerStandIn:
    def __init__(self, monkeypatch, workdir: Path):
        from moto.core.responses import ActionResult
        from moto.sagemaker.models import sagemaker_backends
        from moto.sagemaker.responses import SageMakerResponse
        from moto.sagemakerruntime.responses import SageMakerRuntimeResponse

        for account in list(sagemaker_backends):  # each test starts with no endpoints
            for region in list(sagemaker_backends[account]):
                sagemaker_backends[account][region].reset()
        self.workdir, self.update_outcome = workdir, "in_service"
        self.updates: list[dict] = []
        self.invocations: list[dict] = []
        self.training_jobs: list[dict] = []
        self.servers: dict[str, tuple[subprocess.Popen, str]] = {}
        stand_in = self

        def update_endpoint(response) -> ActionResult:
            params = response._get_params()
            stand_in.updates.append(params)
            endpoint = response.sagemaker_backend.endpoints[params["EndpointName"]]
            if stand_in.update_outcome == "in_service":
                endpoint.endpoint_config_name, endpoint.endpoint_status = params["EndpointConfigName"], "InService"
                endpoint.failure_reason = None
            elif stand_in.update_outcome == "updating":
                endpoint.endpoint_status = "Updating"
            else:  # SageMaker's failed update: the endpoint is back in service on the config it had
                endpoint.endpoint_status = "InService"
                endpoint.failure_reason = "The primary container for production variant AllTraffic did not pass the ping health check."
            return ActionResult({"EndpointArn": endpoint.arn})

        def invoke_endpoint(response):
            # the endpoint name is in the path (/endpoints/<name>/invocations): moto's own handler misses it
            endpoint_name = urllib.parse.unquote(response.path.split("/")[2])
            body = response.body.decode() if isinstance(response.body, bytes) else response.body
            sagemaker = sagemaker_backends[response.current_account][response.region]
            endpoint = sagemaker.endpoints[endpoint_name]
            config = sagemaker.endpoint_configs[endpoint.endpoint_config_name]
            model = sagemaker._models[config.production_variants[0]["ModelName"]]
            url = stand_in._server(model.primary_container, response.current_account)
            stand_in.invocations.append({"endpoint": endpoint_name, "body": body, "server": url})
            request = urllib.request.Request(url + "/invocations", data=body.encode(), method="POST",
                                             headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(request, timeout=30) as resp:
                    return 200, {"Content-Type": "application/json",
                                 "x-Amzn-Invoked-Production-Variant": "AllTraffic"}, resp.read().decode()
            except urllib.error.HTTPError as exc:  # SageMaker's ModelError carries the container's answer
                return 424, {"Content-Type": "application/json", "x-amzn-ErrorType": "ModelError"}, json.dumps(
                    {"message": f"Received client error ({exc.code}) from primary: {exc.read().decode()[:500]}"})

        original_create_training_job = SageMakerResponse.create_training_job

        def create_training_job(response):
            answer = original_create_training_job(response)  # moto records it (as Completed)
            request = response._get_params()
            stand_in._run_training_job(response.sagemaker_backend.training_jobs[request["TrainingJobName"]], request)
            return answer

        monkeypatch.setattr(SageMakerResponse, "create_training_job", create_training_job)
        monkeypatch.setattr(SageMakerResponse, "update_endpoint", update_endpoint, raising=False)
        monkeypatch.setattr(SageMakerRuntimeResponse, "invoke_endpoint", invoke_endpoint)

    def _run_training_job(self, job, request: dict) -> None:
        spec = request["AlgorithmSpecification"]
        self.training_jobs.append(request)
        opt_ml = Path(tempfile.mkdtemp(prefix="opt-ml-", dir=self.workdir))  # the container's /opt/ml
        (opt_ml / "output" / "data").mkdir(parents=True)
        in_container = lambda value: str(opt_ml) + value[len("/opt/ml"):] if value.startswith("/opt/ml/") else value
        env = {k: in_container(v) for k, v in (request.get("Environment") or {}).items()}
        env = {**os.environ, **env, "PYTHONPATH": str(REPO)}
        failure = Path(env["ML_TRAIN_FAILURE_FILE"]) if "ML_TRAIN_FAILURE_FILE" in env else opt_ml / "output" / "failure"
        command = [in_container(a) for a in (*spec["ContainerEntrypoint"], *spec.get("ContainerArguments", []))]
        proc = subprocess.run([sys.executable if command[0] == "python" else command[0], *command[1:]], env=env,
                              capture_output=True, text=True, timeout=600)
        if proc.returncode != 0:
            job.training_job_status = "Failed"
            reason = failure.read_text() if failure.exists() else proc.stderr[-500:]
            job.failure_reason = f"AlgorithmError: {reason}, exit code: {proc.returncode}"

    def _server(self, container: dict, account_id: str) -> str:
        """A real ml.serve for ``container``, started once per ModelDataUrl the SageMaker way."""
        from moto.s3.models import s3_backends

        data_url = container["ModelDataUrl"]
        if data_url in self.servers:
            return self.servers[data_url][1]
        bucket, _, key = data_url[len("s3://"):].partition("/")
        tarball = s3_backends[account_id]["aws"].get_object(bucket, key).value
        model_dir = Path(tempfile.mkdtemp(prefix="opt-ml-model-", dir=self.workdir))
        with tarfile.open(fileobj=io.BytesIO(tarball), mode="r:gz") as tar:
            tar.extractall(model_dir, filter="data")
        from tests.conftest import free_port, wait_for_port

        port = free_port()
        env = {**os.environ, **container.get("Environment", {}), "ML_SERVE_MODEL": str(model_dir),
               "ML_SERVE_HOST": "127.0.0.1", "ML_SERVE_PORT": str(port), "PYTHONPATH": str(REPO),
               "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
        proc = subprocess.Popen(["sh", str(REPO / "docker/serving/serve"), "serve"], env=env,
                                stdout=subprocess.DEVNULL, stderr=open(model_dir / "server.log", "wb"))
        wait_for_port(port, timeout=60)
        url = f"http://127.0.0.1:{port}"
        self.servers[data_url] = (proc, url)
        return url

    def close(self) -> None:
        for proc, _ in self.servers.values():
            proc.terminate()
            proc.wait(10)


class VertexStandIn:
    """Vertex AI's ModelService, EndpointService, PredictionService and Operations as a real gRPC
    server on 127.0.0.1, (de)serialising with the aiplatform library's own message types.

    The google provider's hooks build their requests unchanged; only the client each hook makes is
    pointed at this server (an insecure local channel, no Google credentials): see ``patch_hooks``.
    Every request is recorded as the message the server received. Predict runs a real ml.serve
    per deployed model as Vertex runs the container: ``AIP_HTTP_PORT``, ``AIP_HEALTH_ROUTE``,
    ``AIP_PREDICT_ROUTE`` and ``AIP_STORAGE_URI`` (the artifact in the GCS emulator), and picks the
    deployed model by the endpoint's traffic split, as Vertex does.
    """

    PROJECT, REGION, ENDPOINT_ID = "ml-project", "europe-west4", "1234567890"

    def __init__(self, monkeypatch, workdir: Path):
        import random
        from concurrent import futures

        import grpc
        from google.cloud import aiplatform_v1 as v1
        from google.longrunning import operations_pb2

        self.v1, self.workdir, self.random = v1, workdir, random.Random(7)
        self.requests: list[tuple[str, object]] = []
        self.deploy_outcome = "done"  # or "running", "error"
        self.models: dict[str, object] = {}
        self.custom_jobs: dict[str, object] = {}
        self.operations: dict[str, operations_pb2.Operation] = {}
        self.servers: dict[str, tuple[subprocess.Popen, str, str]] = {}
        self.endpoint_name = f"projects/{self.PROJECT}/locations/{self.REGION}/endpoints/{self.ENDPOINT_ID}"
        self.endpoint = v1.Endpoint(name=self.endpoint_name, display_name="churn")
        self._ids = iter(range(1000, 10**6))
        op = operations_pb2.Operation
        methods = {
            "google.cloud.aiplatform.v1.ModelService": {
                "UploadModel": (v1.UploadModelRequest, op, self._upload),
                "GetModel": (v1.GetModelRequest, v1.Model, lambda r: self.models[r.name])},
            "google.cloud.aiplatform.v1.EndpointService": {
                "GetEndpoint": (v1.GetEndpointRequest, v1.Endpoint, lambda r: self.endpoint),
                "DeployModel": (v1.DeployModelRequest, op, self._deploy),
                "UndeployModel": (v1.UndeployModelRequest, op, self._undeploy),
                "UpdateEndpoint": (v1.UpdateEndpointRequest, v1.Endpoint, self._update)},
            "google.cloud.aiplatform.v1.JobService": {
                "CreateCustomJob": (v1.CreateCustomJobRequest, v1.CustomJob, self._run_custom_job),
                "GetCustomJob": (v1.GetCustomJobRequest, v1.CustomJob, lambda r: self.custom_jobs[r.name])},
            "google.cloud.aiplatform.v1.PredictionService": {
                "Predict": (v1.PredictRequest, v1.PredictResponse, self._predict)},
            "google.longrunning.Operations": {
                "GetOperation": (operations_pb2.GetOperationRequest, op, lambda r: self.operations[r.name])},
        }
        handlers = [grpc.method_handlers_generic_handler(service, {
            name: grpc.unary_unary_rpc_method_handler(
                self._recorded(name, fn), request_deserializer=_deserializer(req), response_serializer=_serializer(resp))
            for name, (req, resp, fn) in table.items()}) for service, table in methods.items()]
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=8), handlers=handlers)
        port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()
        self.address = f"127.0.0.1:{port}"
        self.patch_hooks(monkeypatch)

    def patch_hooks(self, monkeypatch) -> None:
        import grpc
        from airflow.providers.google.cloud.hooks.vertex_ai.endpoint_service import EndpointServiceHook
        from airflow.providers.google.cloud.hooks.vertex_ai.model_service import ModelServiceHook
        from airflow.providers.google.cloud.hooks.vertex_ai.prediction_service import PredictionServiceHook
        from google.cloud.aiplatform_v1.services import endpoint_service, model_service, prediction_service

        def client(module, name):
            transport = getattr(module.transports, f"{name}GrpcTransport")
            return lambda hook, region=None: getattr(module, f"{name}Client")(
                transport=transport(channel=grpc.insecure_channel(self.address)))

        monkeypatch.setattr(EndpointServiceHook, "get_endpoint_service_client", client(endpoint_service, "EndpointService"))
        monkeypatch.setattr(ModelServiceHook, "get_model_service_client", client(model_service, "ModelService"))
        monkeypatch.setattr(PredictionServiceHook, "get_prediction_service_client",
                            client(prediction_service, "PredictionService"))
        from airflow.providers.google.cloud.hooks.vertex_ai.custom_job import CustomJobAsyncHook, CustomJobHook
        from google.cloud.aiplatform_v1.services import job_service

        monkeypatch.setattr(CustomJobHook, "get_job_service_client", client(job_service, "JobService"))

        async def async_job_client(hook, region=None):  # what the provider's CustomJobTrigger polls with
            return job_service.JobServiceAsyncClient(transport=job_service.transports.JobServiceGrpcAsyncIOTransport(
                channel=grpc.aio.insecure_channel(self.address)))

        monkeypatch.setattr(CustomJobAsyncHook, "get_job_service_client", async_job_client)

    def _recorded(self, name, fn):
        def handle(request, context):
            self.requests.append((name, request))
            return fn(request)
        return handle

    def _done(self, response) -> object:
        from google.longrunning import operations_pb2
        from google.protobuf import any_pb2

        packed = any_pb2.Any()
        packed.Pack(type(response).pb(response))
        name = f"{self.endpoint_name}/operations/{next(self._ids)}"
        self.operations[name] = operations_pb2.Operation(name=name, done=True, response=packed)
        return self.operations[name]

    def _run_custom_job(self, request):
        """Run the worker pool's container command here, as the replica would, and end the job the
        way Vertex reports it (SUCCEEDED, or FAILED with the replica's exit status)."""
        from google.rpc import status_pb2

        name = f"projects/{self.PROJECT}/locations/{self.REGION}/customJobs/{next(self._ids)}"
        (pool,) = request.custom_job.job_spec.worker_pool_specs
        container = pool.container_spec
        command = [*container.command, *container.args]
        env = {**os.environ, **{e.name: e.value for e in container.env}, "PYTHONPATH": str(REPO)}
        proc = subprocess.run([sys.executable if command[0] == "python" else command[0], *command[1:]], env=env,
                              capture_output=True, text=True, timeout=600)
        job = self.v1.CustomJob(request.custom_job, name=name)
        if proc.returncode == 0:
            job.state = self.v1.JobState.JOB_STATE_SUCCEEDED
        else:
            job.state = self.v1.JobState.JOB_STATE_FAILED
            job.error = status_pb2.Status(code=3, message=(
                f"The replica workerpool0-0 exited with a non-zero status of {proc.returncode}. Termination reason: "
                f"Error. {proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else ''}"))
        self.custom_jobs[name] = job
        return job

    def _upload(self, request):
        name = f"projects/{self.PROJECT}/locations/{self.REGION}/models/{next(self._ids)}"
        self.models[name] = self.v1.Model(request.model, name=name)
        return self._done(self.v1.UploadModelResponse(model=name))

    def _deploy(self, request):
        deployed = self.v1.DeployedModel(request.deployed_model, id=str(next(self._ids)))
        if self.deploy_outcome == "error":
            from google.rpc import status_pb2

            operation = self._done(self.v1.DeployModelResponse(deployed_model=deployed))
            operation.ClearField("response")
            operation.error.CopyFrom(status_pb2.Status(code=9, message="Model server never became ready"))
            return operation
        self.endpoint.deployed_models.append(deployed)
        split = {(deployed.id if k == "0" else k): v for k, v in request.traffic_split.items()}
        if split:
            self.endpoint.traffic_split = split
        operation = self._done(self.v1.DeployModelResponse(deployed_model=deployed))
        if self.deploy_outcome == "running":
            operation.done = False
        return operation

    def _undeploy(self, request):
        if request.traffic_split:
            self.endpoint.traffic_split = dict(request.traffic_split)
        assert not self.endpoint.traffic_split.get(request.deployed_model_id), "undeploying a model that takes traffic"
        kept = [d for d in self.endpoint.deployed_models if d.id != request.deployed_model_id]
        self.endpoint.deployed_models = kept
        return self._done(self.v1.UndeployModelResponse())

    def _update(self, request):
        assert list(request.update_mask.paths) == ["traffic_split"]
        self.endpoint.traffic_split = dict(request.endpoint.traffic_split)
        return self.endpoint

    def _predict(self, request):
        from google.protobuf import json_format, struct_pb2

        split = dict(self.endpoint.traffic_split)
        chosen = self.random.choices(list(split), weights=list(split.values()))[0]
        deployed = next(d for d in self.endpoint.deployed_models if d.id == chosen)
        url, route = self._server(deployed)
        instances = [json_format.MessageToDict(v) for v in self.v1.PredictRequest.pb(request).instances]
        body = json.dumps({"instances": instances}).encode()
        with urllib.request.urlopen(urllib.request.Request(url + route, data=body, method="POST", headers={
                "Content-Type": "application/json"}), timeout=30) as resp:
            answer = json.loads(resp.read())
        response = self.v1.PredictResponse.pb()(deployed_model_id=deployed.id, model=deployed.model)
        response.predictions.extend(json_format.ParseDict(p, struct_pb2.Value()) for p in answer["predictions"])
        return self.v1.PredictResponse.wrap(response)

    def _server(self, deployed) -> tuple[str, str]:
        """A real ml.serve for a deployed model, started with Vertex's environment."""
        if deployed.id in self.servers:
            return self.servers[deployed.id][1:]
        from tests.conftest import free_port

        model = self.models[deployed.model]
        port = free_port()
        base = f"/v1/endpoints/{self.ENDPOINT_ID}/deployedModels/{deployed.id}"
        env = {**os.environ, **{e.name: e.value for e in model.container_spec.env},
               "AIP_HTTP_PORT": str(port), "AIP_HEALTH_ROUTE": base, "AIP_PREDICT_ROUTE": f"{base}:predict",
               "AIP_STORAGE_URI": model.artifact_uri, "AIP_DEPLOYED_MODEL_ID": deployed.id,
               "ML_SERVE_HOST": "127.0.0.1", "PYTHONPATH": str(REPO),
               "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
        env.pop("ML_SERVE_PORT", None)
        log = open(self.workdir / f"vertex-server-{deployed.id}.log", "wb")
        proc = subprocess.Popen(["sh", str(REPO / "docker/serving/serve")], env=env, stdout=subprocess.DEVNULL, stderr=log)
        url = f"http://127.0.0.1:{port}"
        _wait_ok(url + base, proc)
        self.servers[deployed.id] = (proc, url, f"{base}:predict")
        return url, f"{base}:predict"

    def close(self) -> None:
        self.server.stop(0)
        for proc, *_ in self.servers.values():
            proc.terminate()
            proc.wait(10)


def _wait_ok(url: str, proc: subprocess.Popen, timeout: float = 60) -> None:
    """Until ``url`` answers 200 (Vertex's health check), or the server process died."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the model server exited with code {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError):
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer 200 in {timeout}s")


def _deserializer(message_type):
    return message_type.deserialize if hasattr(message_type, "deserialize") else message_type.FromString


def _serializer(message_type):
    return message_type.serialize if hasattr(message_type, "serialize") else message_type.SerializeToString
