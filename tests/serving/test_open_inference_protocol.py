"""The Open Inference Protocol's details, in process: REST's binary tensors chosen by header only,
JSON tensors (nested, null as a missing value), requested outputs, ids, every refusal as
``{"error"}`` with its 4xx; gRPC's typed contents, raw contents, status codes and UNIMPLEMENTED;
both counted in /metrics; and the .proto for other languages equal to the server's descriptors."""

from __future__ import annotations

import json
import struct
import subprocess

import grpc
import numpy as np
import orjson
import pytest

from ml.serving.oip import messages as M
from tests.conftest import free_port
from tests.serving.test_server_failures import call
from tests.serving_helpers import REPO, in_process


async def call_raw(server, method: str, path: str, body: bytes = b"", headers: dict | None = None):
    """One request through the ASGI interface, no Content-Type unless given: (status, headers, body)."""
    sent, chunks = [], [{"type": "http.request", "body": body, "more_body": False}]

    async def receive():
        return chunks.pop(0) if chunks else {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    raw = [(k.lower().encode(), v.encode()) for k, v in {"content-length": str(len(body)), **(headers or {})}.items()]
    await server({"type": "http", "method": method, "path": path, "headers": raw}, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    return start["status"], {k.decode(): v.decode() for k, v in start["headers"]}, \
        b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")


def tensors_json(features: list[str], rows: list[list]) -> list[dict]:
    return [{"name": f, "datatype": "FP64", "shape": [len(rows)], "data": [r[i] for r in rows]}
            for i, f in enumerate(features)]


def binary_request(features: list[str], matrix: np.ndarray, outputs: list | None = None) -> tuple[bytes, dict]:
    head = {"inputs": [{"name": f, "datatype": "FP64", "shape": [matrix.shape[0]],
                        "parameters": {"binary_data_size": matrix.shape[0] * 8}} for f in features],
            "parameters": {"binary_data_output": True}}
    if outputs:  # as tritonclient: binary_data_output only when no output is named
        head["outputs"] = outputs
        del head["parameters"]
    header = orjson.dumps(head)
    data = b"".join(np.ascontiguousarray(matrix[:, i], "<f8").tobytes() for i in range(matrix.shape[1]))
    return header + data, {"Inference-Header-Content-Length": str(len(header))}


@pytest.fixture
def served(trained_models):
    def run(scenario, **config):
        return in_process(scenario, model_uri=trained_models["1"], model_version="1", name="cancer", **config)
    return run


def test_binary_tensors_are_chosen_by_the_header_alone_and_answer_binary(served, trained_models):
    features, rows = trained_models["features"], trained_models["rows"][1:4]
    matrix = np.array([[np.nan if v is None else v for v in r] for r in rows], dtype=np.float64)

    async def scenario(server):
        body, headers = binary_request(features, matrix)
        binary = await call_raw(server, "POST", "/v2/models/cancer/infer", body, headers)  # no Content-Type
        only_label = await call_raw(server, "POST", "/v2/models/cancer/versions/1/infer",
                                    *binary_request(features, matrix, [{"name": "label"}]))
        invocations = await call(server, "POST", "/invocations", orjson.dumps({"instances": rows}))
        return binary, only_label, invocations

    (status, headers, payload), only_label, invocations = served(scenario)
    assert status == 200 and headers["content-type"] == "application/octet-stream"
    length = int(headers["inference-header-content-length"])
    head = json.loads(payload[:length])
    assert head["model_name"] == "cancer" and head["model_version"] == "1" and "id" not in head
    label, proba = head["outputs"]
    assert label == {"name": "label", "datatype": "INT64", "shape": [3], "parameters": {"binary_data_size": 24}}
    assert proba["shape"] == [3, 2] and proba["parameters"] == {"binary_data_size": 48}
    labels = np.frombuffer(payload[length:length + 24], "<i8").tolist()
    probabilities = np.frombuffer(payload[length + 24:], "<f8").reshape(3, 2)
    assert labels == invocations[1]["predictions"] and np.allclose(probabilities.sum(axis=1), 1)
    assert labels == probabilities.argmax(axis=1).tolist()
    status, headers, payload = only_label  # an output that did not ask for binary comes back as JSON
    assert status == 200 and headers["content-type"] == "application/json"
    assert json.loads(payload)["outputs"] == [{"name": "label", "datatype": "INT64", "shape": [3], "data": labels}]


def test_json_tensors_nested_data_null_as_missing_id_and_requested_outputs(served, trained_models):
    features, rows = trained_models["features"], trained_models["rows"][:2]
    assert rows[0][0] is None  # the first feature may be missing: null in JSON

    async def scenario(server):
        nested = [{**t, "shape": [2, 1], "data": [[v] for v in t["data"]]} for t in tensors_json(features, rows)]
        return (await call(server, "POST", "/v2/models/cancer/infer",
                           orjson.dumps({"id": "abc", "inputs": nested, "parameters": {"priority": 1},
                                         "outputs": [{"name": "probabilities"}]})),
                await call(server, "POST", "/invocations", orjson.dumps({"instances": rows})))

    (status, answer), (_, invocations) = served(scenario)
    assert status == 200 and answer["id"] == "abc" and answer["model_name"] == "cancer"
    (proba,) = answer["outputs"]
    assert proba["name"] == "probabilities" and proba["shape"] == [2, 2] and len(proba["data"]) == 4
    assert np.array(proba["data"]).reshape(2, 2).argmax(axis=1).tolist() == invocations["predictions"]


def test_every_bad_rest_request_is_a_4xx_error_naming_what_to_fix(served, trained_models):
    features, rows = trained_models["features"], trained_models["rows"][1:3]
    good = tensors_json(features, rows)

    def with_first(**change):
        return orjson.dumps({"inputs": [{**good[0], **change}, *good[1:]]})

    body, headers = binary_request(features, np.ones((2, len(features))))
    cases = {
        "not json": (b"{nope", {}, 400, "the request's JSON is not valid"),
        "no inputs": (b'{"inputs": []}', {}, 400, '"inputs"'),
        "missing input": (orjson.dumps({"inputs": good[1:]}), {}, 400, f"missing inputs ['{features[0]}']"),
        "twice": (orjson.dumps({"inputs": [good[0], *good]}), {}, 400, "given twice"),
        "unknown datatype": (with_first(datatype="FP128"), {}, 400, "unknown datatype 'FP128'"),
        "data vs shape": (with_first(shape=[3]), {}, 400, "2 values for shape [3]"),
        "rows disagree": (orjson.dumps({"inputs": [good[0], {**good[1], "shape": [1], "data": [1.0]}, *good[2:]]}), {},
                          400, "same number of rows"),
        "strings for FP64": (with_first(data=["a", "b"]), {}, 400, "not all FP64 values"),
        "null not allowed": (orjson.dumps({"inputs": [good[0], {**good[1], "data": [None, 1.0]}, *good[2:]]}), {}, 400,
                             f"row 0, feature '{features[1]}': missing value"),
        "unknown output": (orjson.dumps({"inputs": good, "outputs": [{"name": "score"}]}), {}, 400,
                           "unknown output 'score'; this model's outputs are ['label', 'probabilities']"),
        "leftover bytes": (body + b"xx", headers, 400, "2 bytes after the JSON header belong to no input"),
        "short binary": (body[:-8], headers, 400, "runs past"),
        "bad header length": (body, {"Inference-Header-Content-Length": "999999"}, 400, "not a length within"),
        "gzip": (body, {**headers, "Content-Encoding": "gzip"}, 415, "send the body uncompressed"),
        "too many rows": (orjson.dumps({"inputs": tensors_json(features, rows * 3)}), {}, 413, "the limit is 4"),
    }

    async def scenario(server):
        got = {name: await call_raw(server, "POST", "/v2/models/cancer/infer", b, h)
               for name, (b, h, _, _) in cases.items()}
        got["GET infer"] = await call_raw(server, "GET", "/v2/models/cancer/infer")
        got["no route"] = await call_raw(server, "GET", "/v2/models/cancer/explain")
        got["other model"] = await call_raw(server, "GET", "/v2/models/other/ready")
        got["after"] = await call(server, "POST", "/v2/models/cancer/infer", orjson.dumps({"inputs": good}))
        got["metrics"] = await call(server, "GET", "/metrics")
        return got

    got = served(scenario, max_rows=4)
    for name, (_, _, status, message) in cases.items():
        answered, headers, payload = got[name]
        assert answered == status and headers["content-type"] == "application/json", (name, payload)
        assert message in json.loads(payload)["error"], (name, payload)
    assert got["GET infer"][0] == 405 and got["no route"][0] == 404 and got["other model"][0] == 404
    assert got["after"][0] == 200
    metrics = got["metrics"][1].decode()
    assert 'ml_serve_requests_total{code="200",path="/v2/infer"} 1.0' in metrics
    assert 'ml_serve_requests_total{code="400",path="/v2/infer"}' in metrics


def test_health_and_readiness_before_a_model_and_the_server_metadata():
    async def scenario(server):
        return {path: await call_raw(server, "GET", path) for path in
                ("/v2/health/live", "/v2/health/ready", "/v2/models/m/ready", "/v2")} | {
            "infer": await call_raw(server, "POST", "/v2/models/m/infer", b'{"inputs": []}')}

    got = in_process(scenario, admin_token="t", artifact_roots=("/nowhere",))  # started empty
    assert (got["/v2/health/live"][0], json.loads(got["/v2/health/live"][2])) == (200, {"live": True})
    assert (got["/v2/health/ready"][0], json.loads(got["/v2/health/ready"][2])) == (503, {"ready": False})
    assert got["/v2/models/m/ready"][0] == 503 and got["infer"][0] == 503
    meta = json.loads(got["/v2"][2])
    assert meta["name"] == "ml.serve" and meta["extensions"] == ["binary_tensor_data"]


async def _grpc_calls(server, port: int) -> dict:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        def rpc(name: str):
            request, response = M.METHODS[name]
            return channel.unary_unary(f"/inference.GRPCInferenceService/{name}",
                                       request_serializer=M.CLASSES[request].SerializeToString,
                                       response_deserializer=M.CLASSES[response].FromString)

        async def outcome(name: str, message):
            try:
                return "OK", await rpc(name)(message, timeout=20)
            except grpc.aio.AioRpcError as exc:
                return exc.code().name, exc.details()

        features = server.current.schema.names
        typed = M.ModelInferRequest(model_name="cancer", id="t-1")
        for i, f in enumerate(features):  # FP32 and INT64 are numbers too
            tensor = typed.inputs.add(name=f, datatype="FP32" if i % 2 else "INT64", shape=[2, 1])
            (tensor.contents.fp32_contents if i % 2 else tensor.contents.int64_contents).extend([1, 2])
        raw_mismatch = M.ModelInferRequest(model_name="cancer")
        raw_mismatch.CopyFrom(typed)
        raw_mismatch.raw_input_contents.append(b"\0" * 16)
        fp16 = M.ModelInferRequest(model_name="cancer")
        fp16.CopyFrom(typed)
        fp16.inputs[0].datatype = "FP16"
        return {
            "typed": await outcome("ModelInfer", typed),
            "raw count": await outcome("ModelInfer", raw_mismatch),
            "fp16 typed": await outcome("ModelInfer", fp16),
            "metadata other version": await outcome("ModelMetadata", M.CLASSES["ModelMetadataRequest"](
                name="cancer", version="9")),
            "ready other model": await outcome("ModelReady", M.CLASSES["ModelReadyRequest"](name="x")),
            "unimplemented": await outcome_of(channel, "/inference.GRPCInferenceService/RepositoryIndex"),
            "metrics": await call(server, "GET", "/metrics"),
        }


async def outcome_of(channel, method: str):
    try:
        await channel.unary_unary(method)(b"", timeout=20)
        return "OK", None
    except grpc.aio.AioRpcError as exc:
        return exc.code().name, exc.details()


def test_grpc_typed_contents_status_codes_and_unimplemented_methods(served):
    port = free_port()
    got = served(lambda server: _grpc_calls(server, port), grpc_port=port)
    status, response = got["typed"]
    assert status == "OK" and response.id == "t-1" and response.model_version == "1"
    assert not response.raw_output_contents  # typed in, typed out
    label, proba = response.outputs
    assert (label.name, label.datatype, list(label.shape)) == ("label", "INT64", [2])
    assert len(label.contents.int64_contents) == 2 and len(proba.contents.fp64_contents) == 4
    assert got["raw count"][0] == "INVALID_ARGUMENT" and "1 raw_input_contents for 30 inputs" in got["raw count"][1]
    assert got["fp16 typed"][0] == "INVALID_ARGUMENT" and "FP16 travels only as raw" in got["fp16 typed"][1]
    assert got["metadata other version"] == ("NOT_FOUND", "model 'cancer' version '9' is not served; version '1' is")
    assert got["ready other model"][0] == "NOT_FOUND"
    assert got["unimplemented"][0] == "UNIMPLEMENTED"
    metrics = got["metrics"][1].decode()
    assert 'ml_serve_requests_total{code="200",path="grpc/ModelInfer"} 1.0' in metrics
    assert 'ml_serve_requests_total{code="400",path="grpc/ModelInfer"} 2.0' in metrics


def test_the_proto_for_other_languages_compiles_to_the_servers_own_descriptors(tmp_path):
    """protoc (grpcio-tools, in the clients' virtualenv) on ml/serving/oip/open_inference.proto
    gives exactly the descriptors ml/serving/oip/messages.py builds."""
    from google.protobuf import descriptor_pb2

    from ml.serving.oip.messages import file_descriptor

    clients = REPO / ".venv-clients" / "bin" / "python"
    out = tmp_path / "oip.pb"
    subprocess.run([str(clients), "-m", "grpc_tools.protoc", f"-I{REPO / 'ml' / 'serving' / 'oip'}",
                    f"--descriptor_set_out={out}", "open_inference.proto"], check=True)
    compiled = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()).file[0]
    assert compiled == file_descriptor()
    assert [m.name for m in compiled.service[0].method] == list(M.METHODS)
    # a field renumbered in Python would differ: the comparison is not vacuous
    changed = file_descriptor()
    changed.message_type[0].name = "Other"
    assert compiled != changed


def test_bytes_tensors_in_binary_form_carry_utf8_text_and_refuse_other_bytes():
    from ml.models.interface import Feature, FeatureSchema
    from ml.serving.inputs import InputError
    from ml.serving.oip.tensors import encode_bytes_elements, from_raw, rows_of

    schema = FeatureSchema([Feature("text", "string"), Feature("tags", "strings"), Feature("n", "number")])
    texts = [t.encode() for t in ("héllo", "週末")]
    tags = [b'["a"]', b"[]"]
    columns = rows_of([from_raw("text", "BYTES", [2], encode_bytes_elements(texts)),
                       from_raw("tags", "BYTES", [2, 1], encode_bytes_elements(tags)),
                       from_raw("n", "INT32", [2], struct.pack("<2i", 3, 4))], schema, 10)
    assert columns.values == [["héllo", "週末"], [["a"], []], [3.0, 4.0]]
    with pytest.raises(InputError, match="row 1, feature 'text': not valid UTF-8"):
        rows_of([from_raw("text", "BYTES", [2], encode_bytes_elements([b"ok", b"\xff\xfe"])),
                 from_raw("tags", "BYTES", [2], encode_bytes_elements(tags)),
                 from_raw("n", "INT32", [2], struct.pack("<2i", 3, 4))], schema, 10)
    with pytest.raises(InputError, match="row 0, feature 'tags': a list of strings travels as BYTES holding a JSON"):
        rows_of([from_raw("text", "BYTES", [2], encode_bytes_elements(texts)),
                 from_raw("tags", "BYTES", [2], encode_bytes_elements([b"a", b"b"])),
                 from_raw("n", "INT32", [2], struct.pack("<2i", 3, 4))], schema, 10)
    with pytest.raises(InputError, match="ends inside an element's 4-byte length"):
        from_raw("text", "BYTES", [2], encode_bytes_elements(texts) + b"\x01")
    with pytest.raises(InputError, match="runs past the end"):
        from_raw("text", "BYTES", [1], struct.pack("<I", 50) + b"short")
