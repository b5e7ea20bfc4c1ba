"""Images are buildable by construction: pinned bases, COPY sources that exist, the lock files the tests use.

Cheap static checks of what a build reads; tests/containers/ builds and runs the images for real.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
DOCKERFILES = sorted(REPO.glob("docker/*/Dockerfile"))


def lock_versions(path: Path) -> dict[str, str]:
    pins = re.findall(r"^([A-Za-z0-9_.\-\[\]]+)==(\S+)", path.read_text(), re.M)
    return {re.sub(r"\[.*\]", "", name).lower(): version for name, version in pins}


def test_there_is_a_trainer_and_an_airflow_image():
    assert {p.parent.name for p in DOCKERFILES} >= {"trainer", "airflow"}


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.parent.name)
def test_base_images_are_pinned_and_copy_sources_exist(dockerfile):
    text = dockerfile.read_text()
    args = dict(re.findall(r"^ARG\s+(\w+)=(\S+)", text, re.M))
    bases = [re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), m.group(0)), b)
             for b in re.findall(r"^FROM\s+(\S+)", text, re.M)]
    assert bases
    for image in bases:
        name, _, tag = image.partition(":")
        assert tag and tag != "latest" and re.search(r"\d+\.\d+", tag), f"{dockerfile}: unpinned base {image}"
    for sources in re.findall(r"^COPY\s+(?:--\S+\s+)*(.+)\s+\S+$", text, re.M):
        for src in sources.split():
            assert (REPO / src).exists(), f"{dockerfile}: COPY source {src} does not exist"
    for req in re.findall(r"-r\s+(\S+)", text):
        assert Path(req).name == "requirements.lock", f"{dockerfile} installs {req}, not a lock file"


def test_trainer_lock_matches_the_lock_the_tests_run():
    main, trainer = lock_versions(REPO / "requirements.lock"), lock_versions(REPO / "ml" / "requirements.lock")
    assert {"scikit-learn", "skops", "pyarrow", "numpy"} <= set(trainer)
    assert "apache-airflow" not in trainer
    mismatched = {n: (v, main.get(n)) for n, v in trainer.items() if main.get(n) != v}
    assert mismatched == {}


def test_requirements_are_exact_pins_and_locked():
    direct = [l.strip() for l in (REPO / "requirements.txt").read_text().splitlines() if l.strip() and not l.startswith("#")]
    locked = lock_versions(REPO / "requirements.lock")
    for line in direct:
        name, _, version = line.partition("==")
        assert version, f"requirements.txt: {line} is not pinned exactly"
        assert locked[re.sub(r"\[.*\]", "", name).lower()] == version


def test_compose_builds_from_existing_dockerfiles_with_pinned_images():
    compose = yaml.safe_load((REPO / "docker-compose.yaml").read_text())
    for name, service in compose["services"].items():
        if "build" in service:
            assert (REPO / service["build"]["context"] / service["build"]["dockerfile"]).exists(), name
        image = service.get("image", "")
        assert ":" in image and not image.endswith(":latest"), f"{name}: image {image!r} is not pinned"
    assert {"airflow-scheduler", "airflow-triggerer", "airflow-dag-processor", "postgres"} <= set(compose["services"])
