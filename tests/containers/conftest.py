"""Real images, built and run: a Docker engine (started here when none answers), the base image
built from Debian packages where no registry can be reached, and Podman for pod YAML.

These tests never skip: where an engine cannot start they fail with what is missing.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from demo.container_engine import Engine, Podman, engine, ensure_base_image

REPO = Path(__file__).resolve().parents[2]
TRAINER, SERVING, AIRFLOW = "ml-trainer:0.1.0", "ml-serving:0.1.0", "ml-airflow:0.1.0"


@pytest.fixture(scope="session")
def docker() -> Engine:
    eng = engine()
    ensure_base_image(eng)
    yield eng
    eng.stop()  # only a dockerd started here is stopped; its images stay cached in .cache/containers


@pytest.fixture(scope="session")
def images(docker, tmp_path_factory) -> dict[str, str]:
    """The trainer and serving images built from this checkout (they share their dependency layer)."""
    logs = tmp_path_factory.mktemp("image-builds")
    version = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    docker.build("docker/trainer/Dockerfile", TRAINER, f"ML_CODE_VERSION={version or 'unknown'}",
                 log=logs / "trainer.log")
    docker.build("docker/serving/Dockerfile", SERVING, log=logs / "serving.log")
    return {"trainer": TRAINER, "serving": SERVING}


@pytest.fixture(scope="session")
def airflow_image(docker, tmp_path_factory) -> str:
    docker.build("docker/airflow/Dockerfile", AIRFLOW, log=tmp_path_factory.mktemp("image-builds") / "airflow.log")
    return AIRFLOW


TEAM_TRAINER, TEAM_SERVING = "keyword-moderation-trainer:1.0.0", "keyword-moderation-serving:1.0.0"


@pytest.fixture(scope="session")
def team_images(docker, images) -> dict[str, str]:
    """The example team model's images (examples/keyword_moderation/docker/), FROM the project's."""
    for dockerfile, tag in (("trainer.Dockerfile", TEAM_TRAINER), ("serving.Dockerfile", TEAM_SERVING)):
        docker.build(f"examples/keyword_moderation/docker/{dockerfile}", tag)
    return {"trainer": TEAM_TRAINER, "serving": TEAM_SERVING}


@pytest.fixture(scope="session")
def podman(docker, images) -> Podman:
    from airflow.providers.cncf.kubernetes.utils.xcom_sidecar import PodDefaults

    sidecar = PodDefaults.SIDECAR_CONTAINER.image  # no registry here: a stand-in built from the Debian base
    docker.build("tests/containers/xcom-sidecar.Dockerfile", sidecar)
    pm = Podman()
    for image in (images["trainer"], images["serving"], sidecar):
        pm.load_from(docker, image)
    return pm


def wait_http(url: str, timeout: float = 60) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError as exc:
            last = exc
        time.sleep(0.3)
    raise TimeoutError(f"{url} did not answer 200 in {timeout}s: {last}")
