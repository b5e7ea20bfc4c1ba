"""The trainer image trains a mounted snapshot; the serving image serves it the SageMaker way."""

from __future__ import annotations

import json

import pytest

from ml import artifacts
from operators.deploy.endpoint_client import invoke, ping
from tests.conftest import free_port
from tests.containers.conftest import wait_http
from tests.helpers import breast_cancer_table, write_snapshot

# Fixture setup counts: the first test builds the base and the images it needs.
pytestmark = pytest.mark.timeout(1200)

CONFIG = {"estimator": "HistGradientBoostingClassifier", "params": {"max_iter": 40}, "target": "target",
          "test_fraction": 0.2, "seed": 7}


def test_trainer_image_trains_a_mounted_snapshot_into_the_same_model_bytes_as_the_laptop(docker, images, tmp_path,
                                                                                            python):
    import subprocess

    data = tmp_path / "data"
    data.mkdir()
    data.chmod(0o777)  # the image runs as an unprivileged user
    write_snapshot(str(data / "snap"), breast_cancer_table())
    args = ["--data", "/data/snap", "--output", "/data/model", "--config", json.dumps(CONFIG),
            "--lineage", json.dumps({"dag_id": "image-test"})]
    proc = docker.docker("run", "--rm", "-v", f"{data}:/data", images["trainer"], "python", "-m", "ml.train", *args,
                         check=False, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    model = artifacts.open_verified(str(data / "model"), kind="model")
    assert model.extra["estimator"] == "HistGradientBoostingClassifier" and model.extra["metrics"]["accuracy"] > 0.9
    assert model.lineage["trainer_code_version"] not in ("", "unknown")  # the commit the image was built from

    # The same command on the host (the `compute="local"` path) gives the same model bytes.
    laptop = tmp_path / "laptop"
    subprocess.run([python, "-m", "ml.train", "--data", str(data / "snap"), "--output", str(laptop),
                    "--config", json.dumps(CONFIG), "--lineage", json.dumps({"dag_id": "image-test"})],
                   check=True, capture_output=True, timeout=300)
    assert artifacts.open_verified(str(laptop), kind="model").digest == model.digest


def test_bad_trainer_config_exits_2_in_the_image_too(docker, images, tmp_path):
    proc = docker.docker("run", "--rm", images["trainer"], "python", "-m", "ml.train", "--data", "/nowhere",
                         "--output", "/tmp/m", "--config", '{"estimator": "os.system"}', "--lineage", "{}",
                         check=False, timeout=120)
    assert proc.returncode == 2 and "ml.train: error:" in proc.stdout + proc.stderr


def test_serving_image_serves_the_sagemaker_way(docker, images, tmp_path, python):
    """`docker run IMAGE serve`, port 8080, the model in /opt/ml/model: /ping and /invocations."""
    import subprocess

    snapshot = tmp_path / "snap"
    write_snapshot(str(snapshot), breast_cancer_table())
    subprocess.run([python, "-m", "ml.train", "--data", str(snapshot), "--output", str(tmp_path / "model"),
                    "--config", json.dumps(CONFIG), "--lineage", "{}"], check=True, capture_output=True, timeout=300)
    model_dir = tmp_path / "opt-ml-model"
    import tarfile

    from operators.deploy.targets.model_package import model_tarball

    tarball, _ = model_tarball(str(tmp_path / "model"))  # what the SageMaker target uploads as ModelDataUrl
    with tarball, tarfile.open(fileobj=tarball, mode="r:gz") as tar:
        tar.extractall(model_dir, filter="data")  # what SageMaker unpacks into /opt/ml/model
    model_dir.chmod(0o755)
    manifest = artifacts.open_verified(str(model_dir), kind="model")
    port = free_port()
    name = f"ml-serving-test-{port}"
    docker.docker("run", "-d", "--name", name, "-p", f"127.0.0.1:{port}:8080", "-v", f"{model_dir}:/opt/ml/model:ro",
                  "-e", "ML_SERVE_MODEL_VERSION=7", images["serving"], "serve")
    try:
        url = f"http://127.0.0.1:{port}"
        wait_http(url + "/ping", timeout=90)
        answer = ping(url)
        assert answer["digest"] == manifest.digest and answer["source"] == "/opt/ml/model"
        assert answer["model_version"] == "7"  # from the Model's container environment
        rows = breast_cancer_table().drop(["target"]).slice(0, 5).to_pylist()
        predictions = invoke(url, rows)
        assert len(predictions["predictions"]) == 5 and set(predictions["predictions"]) <= {0, 1}
        # SageMaker's health check must not pass without a model: an empty /opt/ml/model is refused.
        empty = tmp_path / "empty"
        empty.mkdir()
        proc = docker.docker("run", "--rm", "-v", f"{empty}:/opt/ml/model:ro", images["serving"], "serve",
                             check=False, timeout=120)
        assert proc.returncode != 0 and "manifest" in (proc.stdout + proc.stderr).lower()
    finally:
        docker.docker("rm", "-f", name, check=False)


def test_serving_image_serves_the_vertex_way(docker, images, tmp_path, python):
    """Vertex AI runs the image with no arguments, the port, routes and model location in AIP_*
    variables, and sends {"instances": [...]} to the predict route."""
    import subprocess
    import urllib.request

    snapshot = tmp_path / "snap"
    write_snapshot(str(snapshot), breast_cancer_table())
    subprocess.run([python, "-m", "ml.train", "--data", str(snapshot), "--output", str(tmp_path / "model"),
                    "--config", json.dumps(CONFIG), "--lineage", "{}"], check=True, capture_output=True, timeout=300)
    port = free_port()
    name = f"ml-serving-vertex-{port}"
    base = "/v1/endpoints/123/deployedModels/456"
    docker.docker("run", "-d", "--name", name, "-p", f"127.0.0.1:{port}:8085", "-v", f"{tmp_path / 'model'}:/gcs/model:ro",
                  "-e", "AIP_HTTP_PORT=8085", "-e", f"AIP_HEALTH_ROUTE={base}", "-e", f"AIP_PREDICT_ROUTE={base}:predict",
                  "-e", "AIP_STORAGE_URI=/gcs/model", "-e", "ML_SERVE_MODEL_VERSION=3", images["serving"])
    try:
        url = f"http://127.0.0.1:{port}"
        wait_http(url + base, timeout=90)
        rows = breast_cancer_table().drop(["target"]).slice(0, 3).to_pylist()
        request = urllib.request.Request(url + base + ":predict", data=json.dumps({"instances": rows}).encode(),
                                         headers={"Content-Type": "application/json"}, method="POST")
        with urllib.request.urlopen(request, timeout=30) as resp:
            answer = json.loads(resp.read())
        assert len(answer["predictions"]) == 3 and answer["model_version"] == "3"
    finally:
        docker.docker("rm", "-f", name, check=False)
