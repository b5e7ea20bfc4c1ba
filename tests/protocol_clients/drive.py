"""Drive one family of unmodified Open Inference Protocol clients against a server, in the clients'
own virtualenv (.venv-clients): ``python drive.py triton|kserve`` reads a scenario as JSON on
stdin and prints what each client got, as JSON.

tritonclient and kserve each register the protocol's messages under the same names in protobuf's
default pool, so one process holds only one of them. No project code is imported here: this is
what a team holding these clients would run.

Scenario: {"http": "127.0.0.1:PORT", "grpc": "127.0.0.1:PORT", "model": NAME, "version": V,
"features": [{"name", "datatype", "values": [...]}, ...]}; ``triton-load`` also takes
"stop_file" and "threads".
"""

from __future__ import annotations

import json
import sys

import numpy as np


def column(feature: dict) -> np.ndarray:
    if feature["datatype"] == "BYTES":
        return np.array([v.encode() for v in feature["values"]], dtype=np.object_)
    return np.array(feature["values"], dtype={"FP64": np.float64, "FP32": np.float32, "BOOL": np.bool_,
                                               "INT64": np.int64}[feature["datatype"]])


def bad_cases(features: list[dict]) -> dict[str, list[dict]]:
    """Each a list of tensors (name, datatype, data) that the server must refuse."""
    first, rest = features[0], features[1:]
    wrong_type = "BYTES" if first["datatype"] != "BYTES" else "FP64"
    wrong_values = ["1.0"] * len(first["values"]) if wrong_type == "BYTES" else [1.0] * len(first["values"])
    return {
        "wrong datatype": [{**first, "datatype": wrong_type, "values": wrong_values}, *rest],
        "wrong shape": [{**first, "shape": [1, len(first["values"]), 2],
                         "values": first["values"] * 2}, *rest],
        "unknown input": [{**first, "name": "no_such_feature"}, *rest],
    }


def error_text(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}"


def triton(scenario: dict) -> dict:
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient
    from tritonclient.utils import InferenceServerException

    out = {}
    model, version = scenario["model"], scenario["version"]
    for kind, module, url in (("http", httpclient, scenario["http"]), ("grpc", grpcclient, scenario["grpc"])):
        client = module.InferenceServerClient(url=url)
        got: dict = {"live": client.is_server_live(), "ready": client.is_server_ready(),
                     "model_ready": client.is_model_ready(model), "model_ready_version": client.is_model_ready(model, version)}
        meta = client.get_model_metadata(model, version)
        if kind == "grpc":
            got["metadata"] = {"name": meta.name, "versions": list(meta.versions),
                               "inputs": [{"name": t.name, "datatype": t.datatype, "shape": list(t.shape)}
                                          for t in meta.inputs],
                               "outputs": [{"name": t.name, "datatype": t.datatype, "shape": list(t.shape)}
                                           for t in meta.outputs]}
            server = client.get_server_metadata()
            got["server"] = {"name": server.name, "extensions": list(server.extensions)}
        else:
            got["metadata"] = meta
            got["server"] = client.get_server_metadata()

        def tensors(features):
            made = []
            for f in features:
                data = column(f)
                shape = f.get("shape", [len(f["values"])])
                t = module.InferInput(f["name"], shape, f["datatype"])
                t.set_data_from_numpy(data.reshape(shape))
                made.append(t)
            return made

        result = client.infer(model, tensors(scenario["features"]), model_version=version, request_id="req-1")
        response = result.get_response()
        got["infer"] = {"label": result.as_numpy("label").tolist(),
                        "id": response["id"] if kind == "http" else response.id,
                        "model_name": response["model_name"] if kind == "http" else response.model_name,
                        "model_version": response["model_version"] if kind == "http" else response.model_version}
        proba = result.as_numpy("probabilities")
        got["infer"]["probabilities"] = None if proba is None else proba.tolist()
        only = client.infer(model, tensors(scenario["features"]), outputs=[module.InferRequestedOutput("label")])
        got["infer_label_only"] = {"label": only.as_numpy("label").tolist(),
                                   "probabilities": only.as_numpy("probabilities")}
        got["errors"] = {}
        for case, features in bad_cases(scenario["features"]).items():
            try:
                client.infer(model, tensors(features))
                got["errors"][case] = None
            except (InferenceServerException, ValueError) as exc:
                got["errors"][case] = error_text(exc)
        for case, (name, ver) in {"unknown model": ("no_such_model", ""),
                                  "unknown version": (model, "no-such-version")}.items():
            try:
                client.infer(name, tensors(scenario["features"]), model_version=ver)
                got["errors"][case] = None
            except InferenceServerException as exc:
                got["errors"][case] = error_text(exc)
        got["after_errors"] = client.infer(model, tensors(scenario["features"])).as_numpy("label").tolist()
        out[kind] = got
        client.close()
    return out


def triton_load(scenario: dict) -> dict:
    """A bounded gRPC load: ``threads`` loops of one-row infers until ``stop_file`` exists (at
    most 300 s). Every failure, and how many answers each version gave."""
    import os
    import threading
    import time

    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    client = grpcclient.InferenceServerClient(url=scenario["grpc"])
    failures, versions, lock = [], {}, threading.Lock()
    deadline = time.monotonic() + 300

    def loop():
        tensors = []
        for f in scenario["features"]:
            t = grpcclient.InferInput(f["name"], [len(f["values"])], f["datatype"])
            t.set_data_from_numpy(column(f))
            tensors.append(t)
        while not os.path.exists(scenario["stop_file"]) and time.monotonic() < deadline:
            try:
                version = client.infer(scenario["model"], tensors).get_response().model_version
                with lock:
                    versions[version] = versions.get(version, 0) + 1
            except InferenceServerException as exc:
                with lock:
                    failures.append(error_text(exc))

    threads = [threading.Thread(target=loop) for _ in range(scenario.get("threads", 4))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    client.close()
    return {"failures": failures, "versions": versions}


def kserve(scenario: dict) -> dict:
    import asyncio

    from kserve import InferenceGRPCClient, InferenceRESTClient, InferInput, InferRequest, RESTConfig

    model, version = scenario["model"], scenario["version"]

    def request(features, name=model, outputs=None):
        inputs = []
        for f in features:
            data = column(f)
            shape = f.get("shape", [len(f["values"])])
            t = InferInput(f["name"], shape, f["datatype"])
            t.set_data_from_numpy(data.reshape(shape), binary_data=False)
            inputs.append(t)
        return InferRequest(model_name=name, infer_inputs=inputs, request_id="req-1", request_outputs=outputs)

    def summary(response) -> dict:
        by_name = {o.name: o for o in response.outputs}
        return {"label": by_name["label"].as_numpy().tolist(), "id": response.id,
                "model_name": response.model_name, "model_version": response.model_version,
                "probabilities": by_name["probabilities"].as_numpy().tolist() if "probabilities" in by_name else None}

    async def rest() -> dict:
        client = InferenceRESTClient(RESTConfig(protocol="v2"))
        base = f"http://{scenario['http']}"
        got = {"live": await client.is_server_live(base), "ready": await client.is_server_ready(base),
               "model_ready": await client.is_model_ready(base, model)}
        got["infer"] = summary(await client.infer(base, request(scenario["features"]), model_name=model))
        got["errors"] = {}
        cases = {**bad_cases(scenario["features"]), "unknown model": scenario["features"]}
        for case, features in cases.items():
            name = "no_such_model" if case == "unknown model" else model
            try:
                await client.infer(base, request(features, name), model_name=name)
                got["errors"][case] = None
            except Exception as exc:  # httpx.HTTPStatusError carries the server's {"error"}
                got["errors"][case] = error_text(exc)
        got["after_errors"] = summary(await client.infer(base, request(scenario["features"]), model_name=model))["label"]
        await client.close()
        return got

    async def grpc() -> dict:
        client = InferenceGRPCClient(scenario["grpc"])
        got = {"live": await client.is_server_live(), "ready": await client.is_server_ready(),
               "model_ready": await client.is_model_ready(model)}
        got["infer"] = summary(await client.infer(request(scenario["features"])))
        got["errors"] = {}
        cases = {**bad_cases(scenario["features"]), "unknown model": scenario["features"]}
        for case, features in cases.items():
            try:
                await client.infer(request(features, "no_such_model" if case == "unknown model" else model))
                got["errors"][case] = None
            except Exception as exc:  # grpc.aio.AioRpcError: the status code and the server's message
                got["errors"][case] = f"{getattr(exc, 'code', lambda: '')()}: {error_text(exc)}"
        got["after_errors"] = summary(await client.infer(request(scenario["features"])))["label"]
        await client.close()
        return got

    return {"rest": asyncio.run(rest()), "grpc": asyncio.run(grpc()), "version": version}


def default(value):
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.generic):
        return value.item()
    return str(value)


if __name__ == "__main__":
    scenario = json.load(sys.stdin)
    result = {"triton": triton, "kserve": kserve, "triton-load": triton_load}[sys.argv[1]](scenario)
    print(json.dumps(result, default=default))
