"""A team's own model (examples/keyword_moderation) in its own images, built FROM the project's:
its trainer image trains it, the rendered Kubernetes training pod runs it under podman, and its
serving image serves it and hot-swaps a newer version; the project's plain serving image, which
does not hold the package, refuses its artifact by name."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import yaml

from demo.moderation_posts import table as posts_table
from ml import artifacts
from operators.deploy.endpoint_client import invoke, ping
from operators.training.train_model import training_operator
from tests.conftest import free_port
from tests.containers.conftest import TEAM_TRAINER, wait_http
from tests.helpers import write_snapshot

pytestmark = pytest.mark.timeout(1200)
TRAINER = TEAM_TRAINER


def config(*blocked: str) -> dict:
    return {"model": "keywords", "target": "label", "params": {"blocked_terms": list(blocked)}}


@pytest.fixture
def store(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    data.chmod(0o777)  # the images run as unprivileged users
    write_snapshot(str(data / "snap"), posts_table(800, seed=5).select(["text", "label"]))
    return data


def train_in_image(docker, image: str, store, out: str, cfg: dict):
    return docker.docker("run", "--rm", "-v", f"{store}:/data", image, "python", "-m", "ml.train", "--data",
                         "/data/snap", "--output", f"/data/{out}", "--config", json.dumps(cfg), check=False,
                         timeout=300)


def test_the_team_trainer_image_trains_its_model_and_records_image_and_package(docker, team_images, images, store):
    proc = train_in_image(docker, team_images["trainer"], store, "m1", config("giveaway"))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    manifest = artifacts.open_verified(str(store / "m1"), kind="model")
    assert manifest.extra["model_class"] == "keyword_moderation.model:KeywordModel"
    assert (manifest.extra["model_package"], manifest.extra["model_package_version"]) == ("keyword-moderation",
                                                                                          "1.0.0")
    assert manifest.extra["trainer_image"] == TRAINER
    # the project's own trainer image does not allow (nor hold) the class: refused, naming the choices
    proc = train_in_image(docker, images["trainer"], store, "m0", config())
    assert proc.returncode == 2 and "model 'keywords' is not allowed in this deployment" in proc.stderr
    assert not (store / "m0").exists()


def test_the_team_serving_image_serves_and_hot_swaps_and_the_plain_one_refuses_it(docker, team_images, images,
                                                                                  store):
    for name, blocked in (("m1", "giveaway"), ("m2", "tomatoes")):
        assert train_in_image(docker, team_images["trainer"], store, name, config(blocked)).returncode == 0
    port = free_port()
    container = f"team-serving-{port}"
    docker.docker("run", "-d", "--name", container, "-p", f"127.0.0.1:{port}:8080", "-v", f"{store}:/data:ro",
                  "-e", "ML_SERVE_MODEL=/data/m1", "-e", "ML_SERVE_MODEL_VERSION=1", "-e", "ML_SERVE_ADMIN_TOKEN=t",
                  "-e", "ML_SERVE_ARTIFACT_ROOTS=/data", team_images["serving"], "serve")
    url = f"http://127.0.0.1:{port}"
    record = [{"text": "a friendly giveaway of garden tomatoes"}]
    try:
        wait_http(url + "/ping", timeout=90)
        assert ping(url)["model"] == "keywords"
        assert invoke(url, record)["predictions"] == ["flagged"]  # its blocked term, its own post-processing
        import urllib.request

        request = urllib.request.Request(url + "/admin/model", method="POST", data=json.dumps(
            {"uri": "/data/m2", "version": "2"}).encode(), headers={"Authorization": "Bearer t",
                                                                     "Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as resp:
            assert json.loads(resp.read())["model_version"] == "2"
        assert invoke(url, [{"text": "see you at the meeting, tomatoes"}]) == {"predictions": ["flagged"],
                                                                               "model_version": "2"}
    finally:
        logs = docker.docker("logs", container, check=False)
        docker.docker("rm", "-f", container, check=False)
    assert '"serving model"' in logs.stderr or '"serving model"' in logs.stdout
    proc = docker.docker("run", "--rm", "-v", f"{store}:/data:ro", "-e", "ML_SERVE_MODEL=/data/m1", images["serving"],
                         "serve", check=False, timeout=120)
    assert proc.returncode != 0
    assert "the artifact's model class keyword_moderation.model:KeywordModel is not allowed here" in \
        proc.stdout + proc.stderr


def test_the_team_training_pod_runs_under_podman(docker, podman, team_images, store, tmp_path, make_context):
    from kubernetes.client import ApiClient

    podman.load_from(docker, team_images["trainer"])
    op = training_operator(
        "kubernetes", task_id="train", data_uri="/data/snap", output_root="/data/models", config=config("scam"),
        kubernetes={"image": team_images["trainer"], "namespace": "ml",
                    "compute_resources": {"cpu": "1", "memory": "1Gi"},
                    "volumes": [{"name": "artifacts", "hostPath": {"path": str(store), "type": "Directory"}}],
                    "volume_mounts": [{"name": "artifacts", "mountPath": "/data"}]})
    context = make_context(run_id="manual__2026-01-02", dag_id="ml_training_pipeline")
    context["ti"] = SimpleNamespace(dag_id="ml_training_pipeline", task_id="train", map_index=-1, try_number=1)
    pod = ApiClient().sanitize_for_serialization(op.build_pod_request_obj(context, dry_run=True))
    name = pod["metadata"]["name"]
    spec_file = tmp_path / "pod.yaml"
    spec_file.write_text(yaml.safe_dump(pod))
    podman.run("kube", "play", "--network", "none", str(spec_file), timeout=300)
    try:
        exit_code = podman.run("wait", f"{name}-base", timeout=600).stdout.strip()
        logs = podman.run("logs", f"{name}-base", check=False)
        assert exit_code == "0", logs.stdout[-3000:] + logs.stderr[-3000:]
    finally:
        podman.run("kube", "down", str(spec_file), check=False)
    model = artifacts.open_verified(str(store / "models" / "snap"), kind="model")
    assert model.extra["trainer_image"] == TRAINER and model.extra["metrics"]["accuracy"] > 0.8
