"""The local target gives the server the registered model's name, its name in the Open Inference
Protocol, when it starts one and when it hot-swaps another model in."""

from __future__ import annotations

import time

import pytest

from operators.deploy.targets.base import Served
from tests.serving_helpers import request


@pytest.mark.timeout(180)
def test_the_local_target_starts_and_swaps_under_the_registered_name(trained_models, tmp_path, monkeypatch):
    from operators.deploy.targets.local import LocalServerTarget

    monkeypatch.setenv("ML_ARTIFACT_ROOT", trained_models["root"])
    target = LocalServerTarget("oip-named", state_dir=str(tmp_path / "endpoint"))
    try:
        started = target.deploy(Served("1", trained_models["1"], name="breast_cancer"))
        assert started["facts"]["action"] == "started"
        deadline = time.monotonic() + 60
        while (target.current() is None or not target.current().live) and time.monotonic() < deadline:
            time.sleep(0.2)
        status, meta = request(target.url + "/v2/models/breast_cancer")
        assert status == 200 and meta["name"] == "breast_cancer" and meta["versions"] == ["1"]
        swapped = target.deploy(Served("2", trained_models["2"], name="breast_cancer_v2_name"))
        assert swapped["facts"]["action"] == "hot-swap"
        assert request(target.url + "/v2/models/breast_cancer")[0] == 404
        status, meta = request(target.url + "/v2/models/breast_cancer_v2_name/versions/2")
        assert status == 200 and meta["versions"] == ["2"]
    finally:
        target.stop()
