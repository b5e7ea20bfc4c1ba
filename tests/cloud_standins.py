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

import io
import re
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
            except urllib.error.HTTPError as exc:  # SageMaker's ModelError (424) carries the container's answer
                from moto.core.exceptions import JsonRESTError

                error = JsonRESTError("ModelError", f"Received client error ({exc.code}) from primary: "
                                                    f"{exc.read().decode()[:500]}")
                error.code = 424
                raise error from None

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
        failure = Path(env.get("ML_TRAIN_FAILURE_FILE") or opt_ml / "output" / "failure")
        command = [in_container(a) for a in (*spec["ContainerEntrypoint"], *spec.get("ContainerArguments", []))]
        proc = run_container_command(command, env)
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
        from tests.conftest import free_port

        port = free_port()
        url = f"http://127.0.0.1:{port}"
        proc = start_serve_script(["serve"], {**container.get("Environment", {}), "ML_SERVE_MODEL": str(model_dir),
                                              "ML_SERVE_PORT": str(port)}, model_dir / "server.log", url + "/ping")
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
            import grpc

            self.requests.append((name, request))
            try:
                return fn(request)
            except urllib.error.HTTPError as exc:  # the container refused the rows: Vertex relays it as a 400
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, exc.read().decode()[:500])
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
        proc = run_container_command([*container.command, *container.args],
                                     {e.name: e.value for e in container.env})
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
        url = f"http://127.0.0.1:{port}"
        proc = start_serve_script([], {**{e.name: e.value for e in model.container_spec.env},
                                       "AIP_HTTP_PORT": str(port), "AIP_HEALTH_ROUTE": base,
                                       "AIP_PREDICT_ROUTE": f"{base}:predict", "AIP_STORAGE_URI": model.artifact_uri,
                                       "AIP_DEPLOYED_MODEL_ID": deployed.id},
                                  self.workdir / f"vertex-server-{deployed.id}.log", url + base)
        self.servers[deployed.id] = (proc, url, f"{base}:predict")
        return url, f"{base}:predict"

    def close(self) -> None:
        self.server.stop(0)
        for proc, *_ in self.servers.values():
            proc.terminate()
            proc.wait(10)


def run_container_command(command: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    """A training container's command run here, with the container's environment on top of
    this one (``python`` is this interpreter, the checkout is on the path)."""
    program = sys.executable if command[0] == "python" else command[0]
    return subprocess.run([program, *command[1:]], env={**os.environ, **env, "PYTHONPATH": str(REPO)},
                          capture_output=True, text=True, timeout=600)


def start_serve_script(args: list[str], env: dict[str, str], log: Path, health_url: str) -> subprocess.Popen:
    """The serving image's entry point (``docker/serving/serve``) started here as a platform starts
    the container: its environment on top of this one, ready once ``health_url`` answers 200."""
    base = {k: v for k, v in os.environ.items() if k != "ML_SERVE_PORT"}
    proc = subprocess.Popen(["sh", str(REPO / "docker/serving/serve"), *args], stdout=subprocess.DEVNULL,
                            stderr=open(log, "wb"), env={
                                **base, "ML_SERVE_HOST": "127.0.0.1", "PYTHONPATH": str(REPO),
                                "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", **env})
    _wait_ok(health_url, proc)
    return proc


def _wait_ok(url: str, proc: subprocess.Popen, timeout: float = 60) -> None:
    """Until ``url`` answers 200 (the platform's health check), or the server process died."""
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


class RedshiftStandIn:
    """The Redshift Data API from moto's server mode, with the one thing moto cannot do: run the
    statement. An ``UNLOAD ('<query>') TO 's3://...' ... FORMAT AS PARQUET`` is run as Redshift
    would, with the inner query on a real PostgreSQL database (Redshift speaks PostgreSQL's
    dialect for such a SELECT), its rows written as Parquet into moto's S3 under the TO prefix in
    Redshift's file naming (``<prefix>0000_part_00.parquet``, one file per slice: two slices
    here). The statement then reads FINISHED (or FAILED with the database's error), as
    DescribeStatement reports it; moto alone leaves every statement STARTED."""

    UNLOAD = re.compile(r"^UNLOAD \('(?P<query>(?:[^'\\]|\\.)*)'\) TO '(?P<to>s3://[^']+)' IAM_ROLE '[^']+' "
                        r"FORMAT AS PARQUET$", re.S)

    def __init__(self, monkeypatch, dsn: str, slices: int = 2):
        from moto.redshiftdata.models import Statement, redshiftdata_backends
        from moto.redshiftdata.responses import RedshiftDataAPIServiceResponse

        original_iter = Statement.__iter__

        def described(statement):  # moto's DescribeStatement has no Error field
            yield from original_iter(statement)
            if getattr(statement, "error", None):
                yield "Error", statement.error

        monkeypatch.setattr(Statement, "__iter__", described)

        self.dsn, self.slices, self.statements = dsn, slices, []
        original = RedshiftDataAPIServiceResponse.execute_statement
        stand_in = self

        def execute_statement(response):
            status, headers, body = original(response)
            statement = redshiftdata_backends[response.current_account][response.region].statements[json.loads(body)["Id"]]
            stand_in.statements.append(json.loads(response.body))  # the request as it came over HTTP
            try:
                stand_in._run(statement.query_string, response.current_account)
                statement.status = "FINISHED"
            except Exception as exc:  # the database's error, as Redshift reports a failed statement
                statement.status, statement.error = "FAILED", str(exc).strip()
            return status, headers, body

        monkeypatch.setattr(RedshiftDataAPIServiceResponse, "execute_statement", execute_statement)

    def _run(self, sql: str, account_id: str) -> None:
        import psycopg2
        import pyarrow as pa
        import pyarrow.parquet as pq
        from moto.s3.models import s3_backends

        match = self.UNLOAD.match(sql)
        if not match:
            raise ValueError(f"the stand-in runs UNLOAD ... FORMAT AS PARQUET only, got: {sql[:200]}")
        query = re.sub(r"\\(.)", r"\1", match["query"])
        with psycopg2.connect(self.dsn) as conn, conn.cursor() as cur:
            cur.execute(query)
            names = [d.name for d in cur.description]
            rows = cur.fetchall()
        table = pa.Table.from_pylist([dict(zip(names, r)) for r in rows]) if rows else pa.table({n: [] for n in names})
        bucket, _, prefix = match["to"][len("s3://"):].partition("/")
        per_slice = -(-table.num_rows // self.slices) if table.num_rows else 0
        for i in range(self.slices if table.num_rows else 0):
            part = table.slice(i * per_slice, per_slice)
            if part.num_rows:
                out = io.BytesIO()
                pq.write_table(part, out)
                s3_backends[account_id]["aws"].put_object(bucket, f"{prefix}{i:04d}_part_00.parquet", out.getvalue())


class BigQueryStandIn:
    """BigQuery's REST API (jobs.insert, jobs.get, jobs.getQueryResults, tables.delete) as a local
    HTTP server that google-cloud-bigquery reaches through ``BIGQUERY_EMULATOR_HOST`` (its own
    setting for an emulator), so the google provider's ``BigQueryHook`` and the client library run
    unchanged. A query job runs its SQL on a real PostgreSQL database (so the test's SQL must be
    valid in both dialects) into an in-memory destination table; an extract job writes that table
    as Parquet into the GCS emulator at its ``destinationUris``, sharded BigQuery's way (``*``
    becomes a 12-digit shard number). Every job request is recorded as it came over HTTP."""

    def __init__(self, monkeypatch, dsn: str, shards: int = 2):
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.dsn, self.shards = dsn, shards
        self.jobs: dict[str, dict] = {}
        self.requests: list[dict] = []
        self.tables: dict[str, object] = {}
        self.deleted: list[str] = []
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def _answer(self, status: int, body: dict | None = None) -> None:
                data = json.dumps(body).encode() if body is not None else b""
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                stand_in.requests.append(body)
                self._answer(200, stand_in._run_job(body))

            def do_GET(self):
                path = urllib.parse.urlparse(self.path).path
                parts = path.strip("/").split("/")
                if "jobs" in parts:
                    self._answer(200, stand_in.jobs[parts[parts.index("jobs") + 1]])
                elif "queries" in parts:
                    job = stand_in.jobs[parts[parts.index("queries") + 1]]
                    table = stand_in.tables.get(_table_key(job["configuration"]["query"]["destinationTable"]))
                    self._answer(200, {"kind": "bigquery#getQueryResultsResponse", "jobComplete": True,
                                       "jobReference": job["jobReference"], "totalRows": str(table.num_rows),
                                       "schema": {"fields": _bq_fields(table.schema)}, "rows": []})
                else:
                    self._answer(404, {"error": {"code": 404, "message": f"no route {path}"}})

            def do_DELETE(self):
                stand_in.deleted.append(urllib.parse.urlparse(self.path).path)
                self._answer(204)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        monkeypatch.setenv("BIGQUERY_EMULATOR_HOST", f"http://127.0.0.1:{self.server.server_address[1]}")
        from airflow.providers.google.cloud.hooks.bigquery import BigQueryHook
        from google.auth.credentials import AnonymousCredentials

        monkeypatch.setattr(BigQueryHook, "get_credentials", lambda hook: AnonymousCredentials())

    def _run_job(self, job: dict) -> dict:
        config = job["configuration"]
        job = {**job, "id": f"{job['jobReference']['projectId']}:{job['jobReference']['jobId']}",
               "status": {"state": "DONE"}, "statistics": {"creationTime": "0", "startTime": "0", "endTime": "0"}}
        try:
            if "query" in config:
                self._query(config["query"])
            elif "extract" in config:
                self._extract(config["extract"])
        except Exception as exc:  # noqa: BLE001 - a failed job carries its error, as BigQuery's do
            job["status"] = {"state": "DONE", "errorResult": {"reason": "invalidQuery", "message": str(exc).strip()},
                             "errors": [{"reason": "invalidQuery", "message": str(exc).strip()}]}
        self.jobs[job["jobReference"]["jobId"]] = job
        return job

    def _query(self, query: dict) -> None:
        import psycopg2
        import pyarrow as pa

        with psycopg2.connect(self.dsn) as conn, conn.cursor() as cur:
            cur.execute(query["query"])
            names = [d.name for d in cur.description]
            rows = cur.fetchall()
        table = pa.Table.from_pylist([dict(zip(names, r)) for r in rows]) if rows else pa.table({n: [] for n in names})
        self.tables[_table_key(query["destinationTable"])] = table

    def _extract(self, extract: dict) -> None:
        import fsspec
        import pyarrow.parquet as pq

        table = self.tables[_table_key(extract["sourceTable"])]
        (pattern,) = extract["destinationUris"]
        per_shard = max(-(-table.num_rows // self.shards), 1)
        for i in range(max(-(-table.num_rows // per_shard), 1)):  # an empty table still gives one file
            with fsspec.open(pattern.replace("*", f"{i:012d}"), "wb") as f:
                pq.write_table(table.slice(i * per_shard, per_shard), f, compression="snappy")

    def close(self) -> None:
        self.server.shutdown()


def _table_key(ref: dict) -> str:
    return f"{ref['projectId']}.{ref['datasetId']}.{ref['tableId']}"


def _bq_fields(schema) -> list[dict]:
    import pyarrow as pa

    def kind(t):
        return ("FLOAT" if pa.types.is_floating(t) else "INTEGER" if pa.types.is_integer(t) else
                "BOOLEAN" if pa.types.is_boolean(t) else "TIMESTAMP" if pa.types.is_timestamp(t) else "STRING")
    return [{"name": f.name, "type": kind(f.type), "mode": "NULLABLE"} for f in schema]
