"""The deploy smoke test's client for the Open Inference Protocol (V2): REST with JSON tensors,
and gRPC (``inference.GRPCInferenceService/ModelInfer``), a request built from the model's
declared schema, one tensor per feature, as the server's metadata describes them.

The request names the version it expects (``/v2/models/NAME/versions/V/infer``, gRPC
``model_version``), so a server still serving another version answers NOT_FOUND instead of
answering for it. Both answer like ``endpoint_client.invoke``: ``{"predictions",
"model_version"}``, so the smoke test checks every protocol the same way. Errors are
``EndpointError``s with the status the protocol gave.
"""

from __future__ import annotations

import json
import math
import uuid
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from operators.deploy.endpoint_client import EndpointError, _call

# the ways the smoke test can reach an endpoint: ml.serve's own route, the protocol over REST or gRPC
SMOKE_PROTOCOLS = ("invocations", "v2", "grpc")
GRPC_INFER = "/inference.GRPCInferenceService/ModelInfer"


@dataclass(frozen=True)
class InferRequest:
    """A model's rows as the protocol's input tensors: (name, datatype, values) per feature."""

    name: str
    version: str
    inputs: tuple[tuple[str, str, list], ...]
    rows: int
    id: str


def carried(record: dict[str, Any], schema: list[dict]) -> bool:
    """Whether the protocol can carry ``record``: a missing number travels as NaN, but a BOOL or
    BYTES tensor has no missing value."""
    return all(record.get(f["name"]) is not None for f in schema if f.get("kind", "number") != "number")


def infer_request(name: str, version: str, records: list[dict[str, Any]], schema: list[dict]) -> InferRequest:
    """One tensor per feature of ``schema`` (the manifest's), datatypes as ml.serve declares them."""
    from ml.serving.oip.tensors import DECLARED

    inputs = []
    for f in schema:
        kind = f.get("kind", "number")
        values = [_value(r.get(f["name"]), kind) for r in records]
        inputs.append((f["name"], DECLARED[kind], values))
    return InferRequest(name, version, tuple(inputs), len(records), uuid.uuid4().hex)


def _value(value: Any, kind: str) -> Any:
    if kind == "number":
        return math.nan if value is None else float(value)
    if kind == "boolean":
        return bool(value)
    if kind == "strings":
        return json.dumps(list(value), ensure_ascii=False)
    if kind == "timestamp" and isinstance(value, (datetime, date)):
        return value.isoformat()
    return str(value)


def infer_rest(url: str, request: InferRequest, timeout: float = 30.0) -> dict[str, Any]:
    """POST ``/v2/models/{name}/versions/{version}/infer`` with JSON tensors (a missing number as null)."""
    return rest_answer(_call(f"{url.rstrip('/')}{rest_path(request)}", rest_body(request), timeout), request)


def rest_path(request: InferRequest) -> str:
    return f"/v2/models/{request.name}/versions/{request.version}/infer"


def rest_body(request: InferRequest) -> dict[str, Any]:
    """The JSON body of ``infer_rest`` (for a transport of the target's own, e.g. an API-server proxy)."""
    return {"id": request.id, "outputs": [{"name": "label"}], "inputs": [
        {"name": n, "datatype": datatype, "shape": [request.rows],
         "data": [None if isinstance(v, float) and math.isnan(v) else v for v in values]}
        for n, datatype, values in request.inputs]}


def rest_answer(answer: dict[str, Any], request: InferRequest) -> dict[str, Any]:
    """``infer_rest``'s answer from the protocol's JSON response."""
    return _answer(answer.get("model_version"), answer.get("id"), request,
                   {o.get("name"): o.get("data") for o in answer.get("outputs", [])})


def infer_grpc(address: str, request: InferRequest, timeout: float = 30.0) -> dict[str, Any]:
    """ModelInfer on ``address`` (host:port) with typed contents; the label read from its typed answer."""
    import grpc

    from ml.serving.oip.messages import ModelInferRequest, ModelInferResponse
    from ml.serving.oip.tensors import CONTENTS_FIELD

    message = ModelInferRequest(model_name=request.name, model_version=request.version, id=request.id)
    for n, datatype, values in request.inputs:
        tensor = message.inputs.add(name=n, datatype=datatype, shape=[request.rows])
        getattr(tensor.contents, CONTENTS_FIELD[datatype]).extend(
            [v.encode("utf-8") for v in values] if datatype == "BYTES" else values)
    message.outputs.add(name="label")
    with grpc.insecure_channel(address) as channel:
        call = channel.unary_unary(GRPC_INFER, request_serializer=ModelInferRequest.SerializeToString,
                                   response_deserializer=ModelInferResponse.FromString)
        try:
            response = call(message, timeout=timeout)
        except grpc.RpcError as exc:
            code = exc.code()
            status = {grpc.StatusCode.INVALID_ARGUMENT: 400, grpc.StatusCode.NOT_FOUND: 404,
                      grpc.StatusCode.UNIMPLEMENTED: 501, grpc.StatusCode.INTERNAL: 500}.get(code)
            raise EndpointError(f"grpc://{address} answered {code.name}: {exc.details()}", status) from None
    outputs = {}
    for out in response.outputs:
        values = list(getattr(out.contents, CONTENTS_FIELD[out.datatype])) if out.datatype in CONTENTS_FIELD else []
        outputs[out.name] = [v.decode("utf-8", "replace") for v in values] if out.datatype == "BYTES" else values
    return _answer(response.model_version, response.id, request, outputs)


def _answer(version, echoed, request: InferRequest, outputs: dict[str, Any]) -> dict[str, Any]:
    if echoed != request.id:
        raise EndpointError(f"the answer's id {echoed!r} is not the request's {request.id!r}", 500)
    if "label" not in outputs:
        raise EndpointError(f"the answer has no label output (outputs: {sorted(outputs)})", 500)
    return {"predictions": outputs["label"], "model_version": version}
