"""A server that follows a registry alias switches when the alias moves, and can be asked for a version."""

from __future__ import annotations

import time

from mlflow.tracking import MlflowClient

from tests.serving_helpers import ServerProcess, post_json, request


def test_server_follows_the_alias_and_swaps_by_version(trained_models, tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(tracking_uri=uri)
    client.create_registered_model("served")
    for version in ("1", "2", "3"):
        client.create_model_version("served", source=trained_models[version])
    client.set_registered_model_alias("served", "production", "1")
    with ServerProcess("--registry-model", "served", "--alias", "production", "--tracking-uri", uri,
                       "--poll-seconds", "0.3", "--artifact-root", trained_models["root"], env={"ML_SERVE_ADMIN_TOKEN": "t"}) as server:
        assert request(server.url + "/ping")[1]["model_version"] == "1"
        client.set_registered_model_alias("served", "production", "2")
        deadline = time.monotonic() + 30
        while request(server.url + "/ping")[1]["model_version"] != "2" and time.monotonic() < deadline:
            time.sleep(0.1)
        assert request(server.url + "/ping")[1]["model_version"] == "2"
        status, body = post_json(server.url + "/admin/model", {"version": "3"}, headers={"Authorization": "Bearer t"})
        assert status == 200 and body["model_version"] == "3" and body["previous_version"] == "2"
