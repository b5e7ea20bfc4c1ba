"""The Open Inference Protocol, called by clients others wrote: tritonclient (HTTP with binary
tensors, gRPC with raw contents) and kserve's InferenceRESTClient (JSON) and InferenceGRPCClient
(typed contents), unmodified, in their own virtualenv (tests/protocol_clients), against a real
``python -m ml.serve`` serving REST and gRPC from one process.

For the numeric model and the text model (BYTES): health, metadata, infer; the same predictions
as ``/invocations``; each bad request (wrong datatype, wrong shape, unknown input, unknown model,
a version not served) gets the protocol's error in the client, and the server answers after.
Then ten hot swaps under a gRPC load: no request fails, both versions answer, and a version no
longer served is NOT_FOUND.
"""

from __future__ import annotations

import json
import subprocess
import time

import pytest

from tests.conftest import free_port
from tests.serving_helpers import REPO, ServerProcess, post_json, request

CLIENTS = REPO / ".venv-clients" / "bin" / "python"
DRIVER = REPO / "tests" / "protocol_clients" / "drive.py"
TOKEN = "oip-admin-token"


def drive(family: str, scenario: dict, timeout: float = 120) -> dict:
    if not CLIENTS.exists():
        pytest.fail(f"{CLIENTS} is missing: `make clients-venv` installs the protocol clients (make test does)")
    proc = subprocess.run([str(CLIENTS), str(DRIVER), family], input=json.dumps(scenario), capture_output=True,
                          text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout)


def serve(model: str, version: str, name: str, *extra: str, env: dict | None = None) -> tuple[ServerProcess, int]:
    grpc_port = free_port()
    server = ServerProcess("--model", model, "--model-version", version, "--name", name,
                           "--grpc-port", str(grpc_port), *extra, env={"ML_SERVE_ACCESS_LOG": "false", **(env or {})})
    return server, grpc_port


def scenario(server: ServerProcess, grpc_port: int, name: str, version: str, features: list[dict]) -> dict:
    return {"http": f"127.0.0.1:{server.port}", "grpc": f"127.0.0.1:{grpc_port}", "model": name,
            "version": version, "features": features}


def check_clients(server, grpc_port, name: str, version: str, features: list[dict], expected: list,
                  metadata_inputs: list[dict], label_datatype: str, classes: int):
    """Both client families, both transports: the same answers as /invocations, the protocol's
    errors for bad requests, and the server still answering after them."""
    triton = drive("triton", scenario(server, grpc_port, name, version, features))
    kserve = drive("kserve", scenario(server, grpc_port, name, version, features))
    for transport in ("http", "grpc"):
        got = triton[transport]
        assert got["live"] and got["ready"] and got["model_ready"] and got["model_ready_version"]
        assert got["metadata"]["name"] == name and got["metadata"]["versions"] == [version]
        assert got["metadata"]["inputs"] == metadata_inputs
        assert got["metadata"]["outputs"] == [{"name": "label", "datatype": label_datatype, "shape": [-1]},
                                              {"name": "probabilities", "datatype": "FP64", "shape": [-1, classes]}]
        assert got["server"]["name"] == "ml.serve" and "binary_tensor_data" in got["server"]["extensions"]
        assert got["infer"]["label"] == expected, transport
        assert (got["infer"]["id"], got["infer"]["model_name"], got["infer"]["model_version"]) == ("req-1", name, version)
        assert len(got["infer"]["probabilities"]) == len(expected)
        assert all(abs(sum(p) - 1) < 1e-9 and len(p) == classes for p in got["infer"]["probabilities"])
        assert got["infer_label_only"] == {"label": expected, "probabilities": None}  # only what was asked
        errors = got["errors"]
        code = {"http": ("[400]", "[404]"), "grpc": ("INVALID_ARGUMENT", "NOT_FOUND")}[transport]
        assert code[0] in errors["wrong datatype"] and "this model takes" in errors["wrong datatype"], errors
        assert code[0] in errors["wrong shape"] and "give [rows] or [rows, 1]" in errors["wrong shape"], errors
        assert code[0] in errors["unknown input"] and "unknown input 'no_such_feature'" in errors["unknown input"]
        assert code[1] in errors["unknown model"] and f"this server serves {name!r}" in errors["unknown model"]
        assert code[1] in errors["unknown version"] and "is not served" in errors["unknown version"]
        assert got["after_errors"] == expected
    for transport, (bad, missing) in (("rest", ("400 Bad Request", "404 Not Found")),
                                      ("grpc", ("INVALID_ARGUMENT", "NOT_FOUND"))):
        got = kserve[transport]
        assert got["live"] and got["ready"] and got["model_ready"]
        assert got["infer"]["label"] == expected and got["infer"]["model_name"] == name
        assert got["infer"]["id"] == "req-1" and len(got["infer"]["probabilities"]) == len(expected)
        if transport == "grpc":  # kserve's REST InferResponse drops model_version (theirs to fix); gRPC keeps it
            assert got["infer"]["model_version"] == version
        for case in ("wrong datatype", "wrong shape", "unknown input"):
            assert bad in got["errors"][case], (transport, case, got["errors"][case])
        assert missing in got["errors"]["unknown model"]
        assert got["after_errors"] == expected


def test_numeric_model_with_tritonclient_and_kserve_over_rest_and_grpc(trained_models):
    rows = trained_models["rows"][:3]
    features = [{"name": f, "datatype": "FP64", "values": [row[i] for row in rows]}
                for i, f in enumerate(trained_models["features"])]
    for feature in features:  # the first feature had missing values in training: NaN is a missing value
        feature["values"] = [float("nan") if v is None else v for v in feature["values"]]
    server, grpc_port = serve(trained_models["1"], "1", "cancer")
    with server:
        status, invocations = post_json(server.url + "/invocations", {"instances": rows})
        assert status == 200
        inputs = [{"name": f, "datatype": "FP64", "shape": [-1]} for f in trained_models["features"]]
        check_clients(server, grpc_port, "cancer", "1", features, invocations["predictions"], inputs, "INT64", 2)


def test_text_model_bytes_tensors_with_tritonclient_and_kserve(text_model):
    posts = [{"text": "buy cheap followers today limited offer", "length": 39, "tags": ["promo"]},
             {"text": "週末は家族と公園に行きました", "length": 14, "tags": []},
             {"text": "click this link to win a prize now", "length": 34, "tags": ["promo", "link"]}]
    server, grpc_port = serve(text_model, "4", "moderation")
    with server:
        status, invocations = post_json(server.url + "/invocations", {"instances": posts})
        assert status == 200 and set(invocations["predictions"]) <= {"ok", "flagged"}
        status, meta = request(server.url + "/v2/models/moderation")
        assert status == 200
        features = [{"name": "text", "datatype": "BYTES", "values": [p["text"] for p in posts]},
                    {"name": "length", "datatype": "FP64", "values": [float(p["length"]) for p in posts]},
                    {"name": "tags", "datatype": "BYTES", "values": [json.dumps(p["tags"]) for p in posts]}]
        inputs = [{"name": "text", "datatype": "BYTES", "shape": [-1]},
                  {"name": "length", "datatype": "FP64", "shape": [-1]},
                  {"name": "tags", "datatype": "BYTES", "shape": [-1]}]
        assert meta["inputs"] == inputs
        check_clients(server, grpc_port, "moderation", "4", features, invocations["predictions"], inputs, "BYTES", 2)


def test_ten_hot_swaps_under_grpc_load_fail_no_request_and_an_old_version_is_not_found(trained_models, tmp_path):
    rows = trained_models["rows"][:1]
    features = [{"name": f, "datatype": "FP64", "values": [float("nan") if row[i] is None else row[i] for row in rows]}
                for i, f in enumerate(trained_models["features"])]
    server, grpc_port = serve(trained_models["1"], "1", "cancer", "--artifact-root", trained_models["root"],
                              env={"ML_SERVE_ADMIN_TOKEN": TOKEN})  # the admin token is read from the environment only
    stop_file = tmp_path / "stop"
    with server:
        plan = tmp_path / "load.json"
        plan.write_text(json.dumps({**scenario(server, grpc_port, "cancer", "1", features),
                                    "stop_file": str(stop_file), "threads": 4}))
        with plan.open() as stdin:
            load = subprocess.Popen([str(CLIENTS), str(DRIVER), "triton-load"], stdin=stdin, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True)
        try:
            time.sleep(2)  # the load is running before the first swap
            for i in range(10):
                version = "2" if i % 2 == 0 else "1"
                status, answer = post_json(server.url + "/admin/model",
                                           {"uri": trained_models[version], "version": version},
                                           headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60)
                assert status == 200 and answer["model_version"] == version, answer
                time.sleep(0.3)
        finally:
            stop_file.touch()
            out, err = load.communicate(timeout=60)
        assert load.returncode == 0, err[-3000:]
        report = json.loads(out)
        assert report["failures"] == [], report["failures"][:5]
        assert set(report["versions"]) == {"1", "2"} and sum(report["versions"].values()) > 200, report
        # version 1 serves now (the tenth swap); version 2 is no longer served: 404, never v1's answer
        # JSON has no NaN: null is a missing value (the first feature may be missing)
        body = {"inputs": [{"name": f, "datatype": "FP64", "shape": [1], "data": [rows[0][i]]}
                           for i, f in enumerate(trained_models["features"])]}
        assert body["inputs"][0]["data"] == [None]
        status, answer = post_json(server.url + "/v2/models/cancer/versions/2/infer", body)
        assert status == 404 and "version '2' is not served; version '1' is" in answer["error"]
        status, answer = post_json(server.url + "/v2/models/cancer/versions/1/infer", body)
        assert status == 200 and answer["model_version"] == "1"
