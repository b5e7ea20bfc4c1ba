"""The compose stack, started from this repository's images: the pipeline triggered through the
containerised api-server's REST API, and a client container getting predictions from the
version the pipeline deployed into the `serving` container.

The stack runs the CeleryExecutor with two replicas of airflow-worker and the training worker.
PostgreSQL and Redis come from the Debian base through tests/containers/compose.local.yaml (no
registry here); everything else is the project's own images, as `make stack` runs them.
"""

from __future__ import annotations

import json
import secrets
import time

import pytest

from demo.local_airflow import AirflowRest
from tests.conftest import free_port
from tests.containers.conftest import wait_http

# Fixture setup counts: the first test builds the base and the images it needs.
pytestmark = pytest.mark.timeout(2400)

PROJECT = "mltest"
CLIENT = """
import json, urllib.request
ping = json.load(urllib.request.urlopen("http://serving:8080/ping"))
rows = [[float(i % 7) for i in range(len(ping["features"]))] for _ in range(3)]
request = urllib.request.Request("http://serving:8080/invocations", data=json.dumps({"instances": rows}).encode(),
                                 headers={"Content-Type": "application/json"})
answer = json.load(urllib.request.urlopen(request))
# the Open Inference Protocol over gRPC, on the serving container's gRPC port, under the registered name
import grpc
from ml.serving.oip.messages import ModelInferRequest, ModelInferResponse
infer = ModelInferRequest(model_name="demo_classifier")
for i, name in enumerate(ping["features"]):
    infer.inputs.add(name=name, datatype="FP64", shape=[3]).contents.fp64_contents.extend([r[i] for r in rows])
with grpc.insecure_channel("serving:8081") as channel:
    reply = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer", request_serializer=ModelInferRequest.
                                SerializeToString, response_deserializer=ModelInferResponse.FromString)(infer, timeout=60)
grpc_labels = list(reply.outputs[0].contents.int64_contents)
print(json.dumps({"ping": ping, "answer": answer, "grpc": grpc_labels, "grpc_version": reply.model_version}))
"""


@pytest.fixture(scope="module")
def stack(docker, images, airflow_image):
    from demo.stack import LOCAL_POSTGRES, Stack

    env = {"ML_STACK_API_PORT": str(free_port()), "ML_STACK_MLFLOW_PORT": str(free_port()),
           "ML_STACK_SERVING_PORT": str(free_port()), "ML_STACK_SERVING_GRPC_PORT": str(free_port()),
           "AIRFLOW_ADMIN_PASSWORD": secrets.token_urlsafe(12),
           "ML_SERVE_ADMIN_TOKEN": secrets.token_urlsafe(16), "AIRFLOW_JWT_SECRET": secrets.token_urlsafe(32),
           "AIRFLOW_SECRET_KEY": secrets.token_urlsafe(32),
           # A yearly schedule whose first interval has not ended: unpausing creates no cron run, so
           # the REST-triggered run below is the only one (the cron path is tested in tests/integration).
           "ML_PIPELINE_SCHEDULE": "0 3 1 1 *",
           # one api-server process: four started beside the other tests on two cores took over 180 s
           "ML_STACK_API_WORKERS": "1"}
    stack = Stack(docker, project=PROJECT, env=env)
    stack.build()  # the images are built already (fixtures): this reuses them, and builds PostgreSQL
    assert LOCAL_POSTGRES in stack.files or docker.has_image("postgres:15-bookworm")
    stack.down(volumes=True)
    stack.up(workers=2)
    try:
        url = f"http://127.0.0.1:{env['ML_STACK_API_PORT']}"
        wait_api_server(docker, url + "/api/v2/monitor/health")
        # its one api-server process, beside the other tests on two cores, may take over 30 s a request
        api = AirflowRest(url, "admin", env["AIRFLOW_ADMIN_PASSWORD"], timeout=120)
        yield {"api": api, "stack": stack, "env": env}
    finally:
        print(stack.logs()[-20000:])
        stack.down(volumes=True)


def wait_api_server(docker, url: str, timeout: float = 480) -> None:
    """The api-server answers once the init container migrated the database and its process
    imported the API: on a loaded machine minutes. Waits while its container runs; one that
    exited fails at once, with its state."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return wait_http(url, timeout=15)
        except TimeoutError as exc:
            state = docker.docker("ps", "-a", "--filter", f"name={PROJECT}_airflow-apiserver_1", "--format",
                                  "{{.Status}}", timeout=60).stdout.strip()
            if time.monotonic() > deadline or not state.startswith("Up"):
                raise TimeoutError(f"{exc}; the api-server container: {state or 'not created'}") from None


def test_the_stack_runs_the_pipeline_and_a_client_container_gets_predictions(stack, docker):
    api = stack["api"]
    deadline = time.monotonic() + 120
    while {d["dag_id"] for d in api.api("GET", "/api/v2/dags")["dags"]} < {"ml_training_pipeline", "ml_deploy"}:
        assert time.monotonic() < deadline, "the dag-processor container did not parse the DAGs"
        time.sleep(2)
    api.api("PATCH", "/api/v2/dags/ml_training_pipeline", {"is_paused": False})
    run_id = api.trigger("ml_training_pipeline", {"estimator": "LogisticRegression", "hyperparameters": {"max_iter": 500}},
                         logical_date=None)  # no data interval: every row up to run_after
    for run in [run_id] + [r["dag_run_id"] for r in api.api("GET", "/api/v2/dags/ml_training_pipeline/dagRuns")[
            "dag_runs"] if r["dag_run_id"] != run_id]:
        if api.wait_for_run("ml_training_pipeline", run, timeout=600) != "success":
            tis = api.task_instances("ml_training_pipeline", run)
            pytest.fail(f"run {run} failed: { {t: ti['state'] for t, ti in tis.items()} }\n"
                        f"{api.failed_task_logs('ml_training_pipeline', run)}")

    # Under the CeleryExecutor: the training worker trained, a general worker deployed, and the two
    # replicas of airflow-worker run (each its own hostname).
    tis = api.task_instances("ml_training_pipeline", run_id)
    names = docker.docker("ps", "--format", "{{.Names}}", timeout=60).stdout.split()
    replicas = [n for n in names if n.startswith(f"{PROJECT}_airflow-worker_")]
    assert len(replicas) == 2, names
    trainer = docker.docker("inspect", "-f", "{{.Config.Hostname}}", f"{PROJECT}_airflow-worker-training_1",
                            timeout=60).stdout.strip()
    general = {docker.docker("inspect", "-f", "{{.Config.Hostname}}", n, timeout=60).stdout.strip() for n in replicas}
    assert (tis["train"]["queue"], tis["train"]["hostname"]) == ("training", trainer)
    assert tis["deploy"]["queue"] == "deploy" and tis["deploy"]["hostname"] in general, (tis["deploy"], general)

    client = docker.docker("run", "--rm", "--network", f"{PROJECT}_default", "--entrypoint", "python",
                           "ml-serving:0.1.0", "-c", CLIENT, timeout=120)
    answer = json.loads(client.stdout.strip().splitlines()[-1])
    # The version the registry calls production is the one the serving container answers with.
    mlflow = docker.docker("exec", f"{PROJECT}_airflow-scheduler_1", "python", "-c",
                           "from mlflow.tracking import MlflowClient; import os; print(MlflowClient("
                           "'postgresql+psycopg2://airflow:airflow@postgres:5432/mlflow')"
                           ".get_model_version_by_alias('demo_classifier', 'production').version)", timeout=120)
    production = mlflow.stdout.strip().splitlines()[-1]
    assert answer["ping"]["model_version"] == answer["answer"]["model_version"] == production
    assert answer["ping"]["source"].startswith("file:///data/artifacts/models/demo_classifier/")
    assert len(answer["answer"]["predictions"]) == 3 and set(answer["answer"]["predictions"]) <= {0, 1}
    # gRPC inside the stack's network answers as REST does; the host reaches the published gRPC port
    assert answer["grpc"] == answer["answer"]["predictions"] and answer["grpc_version"] == production
    import grpc

    from ml.serving.oip.messages import CLASSES

    with grpc.insecure_channel(f"127.0.0.1:{stack['env']['ML_STACK_SERVING_GRPC_PORT']}") as channel:
        ready = channel.unary_unary("/inference.GRPCInferenceService/ModelReady",
                                    request_serializer=CLASSES["ModelReadyRequest"].SerializeToString,
                                    response_deserializer=CLASSES["ModelReadyResponse"].FromString)(
            CLASSES["ModelReadyRequest"](name="demo_classifier", version=production), timeout=60)
    assert ready.ready
