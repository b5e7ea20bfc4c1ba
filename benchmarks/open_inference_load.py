"""The Open Inference Protocol's load for benchmarks/serving.py: single-row infer requests over
REST (wrk, JSON) and gRPC (h2load, nghttp2's HTTP/2 load generator written in C, sending the
serialized ModelInferRequest as a gRPC frame), 8 concurrent requests either way.

h2load sees HTTP statuses only, and a gRPC error is an HTTP 200 whose trailers say so; so each
server's request is first sent once with a real gRPC client and must succeed, and ml.serve's
own /metrics must count no gRPC error after the load. Latencies come from h2load's per-request
log (microseconds until each response ended).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
import urllib.request
from pathlib import Path

GRPC_PATH = "/inference.GRPCInferenceService/ModelInfer"


def per_feature_request(name: str, names: list[str], row: list[float]) -> dict:
    """ml.serve's inputs: one FP64 tensor per feature (its metadata), only the label asked for."""
    return {"model_name": name, "inputs": [{"name": n, "datatype": "FP64", "shape": [1], "data": [v]}
                                           for n, v in zip(names, row)], "outputs": [{"name": "label"}]}


def matrix_request(name: str, tensor: str, row: list[float]) -> dict:
    """KServe's and MLServer's scikit-learn input: one [1, features] FP64 tensor."""
    return {"model_name": name, "inputs": [{"name": tensor, "datatype": "FP64", "shape": [1, len(row)],
                                            "data": row}]}


def grpc_message(request: dict) -> bytes:
    """The same request as a serialized ModelInferRequest (typed contents)."""
    from ml.serving.oip.messages import ModelInferRequest

    message = ModelInferRequest(model_name=request["model_name"])
    for t in request["inputs"]:
        tensor = message.inputs.add(name=t["name"], datatype=t["datatype"], shape=t["shape"])
        tensor.contents.fp64_contents.extend(t["data"])
    for o in request.get("outputs", []):
        message.outputs.add(name=o["name"])
    return message.SerializeToString()


def grpc_check(address: str, message: bytes) -> str:
    """One call with a real gRPC client: the version that answered, or SystemExit with the error."""
    import grpc

    from ml.serving.oip.messages import ModelInferRequest, ModelInferResponse

    with grpc.insecure_channel(address) as channel:
        call = channel.unary_unary(GRPC_PATH, request_serializer=ModelInferRequest.SerializeToString,
                                   response_deserializer=ModelInferResponse.FromString)
        try:
            response = call(ModelInferRequest.FromString(message), timeout=30)
        except grpc.RpcError as exc:
            raise SystemExit(f"gRPC infer on {address} failed: {exc.code()}: {exc.details()}") from None
    if not response.outputs:
        raise SystemExit(f"gRPC infer on {address} answered no output")
    return response.model_version


def h2load(address: str, message: bytes, seconds: int, connections: int = 8) -> dict:
    """``connections`` HTTP/2 connections, one request in flight on each, for ``seconds``."""
    if not shutil.which("h2load"):
        raise SystemExit("h2load is not installed: apt-get install nghttp2-client (it drives the gRPC load)")
    with tempfile.TemporaryDirectory(prefix="h2load-") as tmp:
        body, log = Path(tmp) / "body", Path(tmp) / "log.tsv"
        body.write_bytes(b"\x00" + len(message).to_bytes(4, "big") + message)  # a gRPC frame, uncompressed
        out = subprocess.run(
            ["h2load", "-t1", f"-c{connections}", "-m1", f"-D{seconds}", "--warm-up-time=1", "-d", str(body),
             "-H", "content-type: application/grpc", "-H", "te: trailers", f"--log-file={log}",
             f"http://{address}{GRPC_PATH}"], capture_output=True, text=True, check=True).stdout
        durations = sorted(int(line.split("\t")[2]) for line in log.read_text().splitlines() if line.strip())
        statuses = [line.split("\t")[1] for line in log.read_text().splitlines() if line.strip()]
    done = re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed", out)
    rate = re.search(r"finished in [\d.]+m?s, ([\d.]+) req/s", out)
    if not durations or not done or not rate:
        raise SystemExit(f"h2load measured nothing:\n{out[-2000:]}")

    def pct(p: float) -> float:
        return durations[min(len(durations) - 1, int(p * len(durations)))] / 1000

    return {"rps": float(rate.group(1)), "p50_ms": pct(0.50), "p99_ms": pct(0.99),
            "non_2xx": sum(s != "200" for s in statuses) + int(done.group(3)), "socket_errors": ""}


def ml_serve_grpc_errors(url: str) -> int:
    """gRPC infers ml.serve answered with an error, from its own metrics."""
    with urllib.request.urlopen(url + "/metrics", timeout=10) as resp:
        text = resp.read().decode()
    return sum(int(float(v)) for code, v in re.findall(
        r'ml_serve_requests_total\{code="(\d+)",path="grpc/ModelInfer"\} ([\d.e+]+)', text) if code != "200")


def rest_body(request: dict) -> str:
    return json.dumps(request)
