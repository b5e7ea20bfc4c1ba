"""The Open Inference Protocol over HTTP: the ``/v2`` routes, JSON and binary tensors.

A body carries binary tensors when the ``Inference-Header-Content-Length`` header says how long
its JSON part is (never by Content-Type: tritonclient sends binary without one); each input with
``parameters.binary_data_size`` takes that many bytes after the JSON, in order. An output goes
back binary when it asks (``parameters.binary_data``) or the request does
(``parameters.binary_data_output``, tritonclient's default), with the same header on the answer.
"""

from __future__ import annotations

from typing import Any

import orjson

from ml.serving.inputs import InputError
from ml.serving.oip import tensors as T
from ml.serving.oip.service import ModelNotFound, NotReady, OpenInference, server_metadata

JSON = b"application/json"
HEADER_LENGTH = "inference-header-content-length"


def _answer(status: int, doc: Any) -> tuple[int, bytes, bytes]:
    return status, orjson.dumps(doc), JSON


def _parse_model_path(parts: list[str]) -> tuple[str, str | None, str]:
    """``models/{name}[/versions/{version}][/ready|/infer]`` -> (name, version, action)."""
    name, rest = parts[0], parts[1:]
    version = None
    if len(rest) >= 2 and rest[0] == "versions":
        version, rest = rest[1], rest[2:]
    if len(rest) > 1 or (rest and rest[0] not in ("ready", "infer")):
        raise ModelNotFound(f"no route /v2/models/{'/'.join(parts)}; see the Open Inference Protocol's REST API")
    return name, version, rest[0] if rest else "metadata"


class RestRoutes:
    def __init__(self, protocol: OpenInference):
        self.protocol = protocol

    def route_label(self, path: str) -> str:
        """The metrics' path label: one per kind of route, not per model name."""
        if path.endswith("/infer"):
            return "/v2/infer"
        if path.startswith("/v2/health"):
            return "/v2/health"
        return "/v2/models" if path.startswith("/v2/models") else "/v2"

    async def handle(self, path: str, method: str, headers: dict, read_body) -> tuple:
        parts = [p for p in path.split("/") if p][1:]  # after "v2"
        try:
            if not parts:
                return self._get(method) or _answer(200, server_metadata())
            if parts[0] == "health" and len(parts) == 2 and parts[1] in ("live", "ready"):
                if wrong := self._get(method):
                    return wrong
                if parts[1] == "live":
                    return _answer(200, {"live": True})
                ready = self.protocol.server.current is not None
                return _answer(200 if ready else 503, {"ready": ready})
            if parts[0] != "models" or len(parts) < 2:
                raise ModelNotFound(f"no route {path}; the protocol's routes are /v2, /v2/health/{{live,ready}} and "
                                    f"/v2/models/{{name}}[/versions/{{version}}][/ready|/infer]")
            name, version, action = _parse_model_path(parts[1:])
            if action == "infer":
                if method != "POST":
                    return _answer(405, {"error": f"{method} not allowed on {path}; use POST"})
                body = await read_body()
                return await self._infer(name, version, headers, body)
            if wrong := self._get(method):
                return wrong
            if action == "ready":
                try:
                    self.protocol.resolve(name, version)
                except NotReady:
                    return _answer(503, {"name": name, "ready": False})
                return _answer(200, {"name": name, "ready": True})
            return _answer(200, self.protocol.metadata(self.protocol.resolve(name, version)))
        except InputError as exc:
            return _answer(exc.status, {"error": str(exc)})

    @staticmethod
    def _get(method: str):
        return None if method == "GET" else _answer(405, {"error": f"{method} not allowed; use GET"})

    async def _infer(self, name: str, version: str | None, headers: dict, body: bytes) -> tuple:
        model = self.protocol.resolve(name, version)
        request, binary = _split_body(headers, body)
        inputs = request.get("inputs")
        if not isinstance(inputs, list) or not inputs:
            raise InputError('the request needs "inputs": a list of tensors, one per feature')
        decoded, at = [], 0
        for tensor in inputs:
            size = _binary_size(tensor)
            if size is None:
                decoded.append(T.from_json(tensor))
                continue
            if at + size > len(binary):
                raise InputError(f"input {tensor.get('name')!r}: binary_data_size {size} runs past the "
                                 f"{len(binary)} bytes after the JSON header")
            decoded.append(T.from_raw(tensor.get("name"), tensor.get("datatype"), tensor.get("shape"),
                                      binary[at:at + size]))
            at += size
        if at != len(binary):
            raise InputError(f"{len(binary) - at} bytes after the JSON header belong to no input's binary_data_size")
        parameters = request.get("parameters") or {}
        all_binary = bool(parameters.get("binary_data_output")) if isinstance(parameters, dict) else False
        wanted, as_binary = [], {}
        for out in request.get("outputs") or []:
            if not isinstance(out, dict) or not isinstance(out.get("name"), str):
                raise InputError('each requested output must be an object with a "name"')
            wanted.append(out["name"])
            as_binary[out["name"]] = bool((out.get("parameters") or {}).get("binary_data", all_binary))
        results = await self.protocol.infer(model, self.protocol.rows(model, decoded), wanted,
                                            headers.get("x-request-id", ""))
        answer: dict[str, Any] = {"model_name": self.protocol.protocol_name(model), "model_version": model.version}
        if isinstance(request.get("id"), str):
            answer["id"] = request["id"]
        outputs, chunks = [], []
        for out_name, datatype, shape, data in results:
            tensor: dict[str, Any] = {"name": out_name, "datatype": datatype, "shape": shape}
            if as_binary.get(out_name, all_binary):
                raw = T.raw_of(datatype, data)
                tensor["parameters"] = {"binary_data_size": len(raw)}
                chunks.append(raw)
            else:
                tensor["data"] = T.json_data(datatype, data)
            outputs.append(tensor)
        answer["outputs"] = outputs
        head = orjson.dumps(answer)
        if not chunks:
            return 200, head, JSON
        return 200, head + b"".join(chunks), b"application/octet-stream", [
            (b"inference-header-content-length", str(len(head)).encode())]


def _split_body(headers: dict, body: bytes) -> tuple[dict, bytes]:
    declared = headers.get(HEADER_LENGTH)
    if declared is not None:
        if not declared.isdigit() or int(declared) > len(body):
            raise InputError(f"Inference-Header-Content-Length {declared!r} is not a length within the "
                             f"{len(body)}-byte body")
        head, binary = body[:int(declared)], body[int(declared):]
    else:
        head, binary = body, b""
    if headers.get("content-encoding", "identity") not in ("identity", ""):
        raise InputError(f"Content-Encoding {headers['content-encoding']!r} is not supported; send the body "
                         f"uncompressed", 415)
    try:
        request = orjson.loads(head)
    except orjson.JSONDecodeError as exc:
        raise InputError(f"the request's JSON is not valid: {exc}") from None
    if not isinstance(request, dict):
        raise InputError('the request must be a JSON object with "inputs"')
    return request, binary


def _binary_size(tensor: Any) -> int | None:
    parameters = tensor.get("parameters") if isinstance(tensor, dict) else None
    size = parameters.get("binary_data_size") if isinstance(parameters, dict) else None
    if size is None:
        return None
    if type(size) is not int or size < 0:
        raise InputError(f"input {tensor.get('name')!r}: binary_data_size must be a byte count")
    return size
