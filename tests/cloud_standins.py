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
