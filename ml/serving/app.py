"""The ASGI application: routing, limits, logging, hot swap. A plain ASGI callable, no framework,
because every microsecond of per-request overhead is paid thousands of times a second."""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
import sys
import time
import uuid
from dataclasses import dataclass
from typing import Any

import orjson

from ml.serving.artifact_roots import OutsideArtifactRoots, check_inside
from ml.serving.batcher import MicroBatcher
from ml.serving.inputs import MAX_TEXT_CHARS, InputError, parse_body
from ml.serving.metrics import ServerMetrics
from ml.serving.model import LoadedModel, ModelFailure, load_model
from ml.serving.oip.rest import RestRoutes
from ml.serving.oip.service import OpenInference
from ml.serving.openapi import openapi_document

log = logging.getLogger("ml.serve")


@dataclass
class ServeConfig:
    """Every knob has a flag and an ``ML_SERVE_*`` environment variable (see ml/serve.py)."""

    model_uri: str | None = None
    # the model's name in the Open Inference Protocol (the registered model's name; see ml/serving/oip)
    name: str | None = None
    # the protocol's gRPC port (ml/serving/oip/grpc_server.py); None: no gRPC
    grpc_port: int | None = None
    grpc_host: str = "127.0.0.1"
    model_version: str | None = None
    registry_model: str | None = None
    alias: str = "production"
    tracking_uri: str | None = None
    max_batch: int = 64
    max_wait_ms: float = 1.0
    predict_threads: int = 1
    max_body_bytes: int = 1 << 20
    max_rows: int = 10_000
    predict_timeout_s: float = 10.0
    max_text_chars: int = MAX_TEXT_CHARS
    poll_seconds: float = 5.0
    admin_token: str | None = None
    access_log: bool = True
    # extra paths answering as /ping and /invocations: Vertex AI's AIP_HEALTH_ROUTE and
    # AIP_PREDICT_ROUTE (see ml/serve.py), whatever the platform chose
    health_route: str | None = None
    predict_route: str | None = None
    # /admin/model loads models only inside these (ml/serving/artifact_roots.py)
    artifact_roots: tuple[str, ...] = ()
    # prediction capture (ml/serving/capture.py): this share of the requests, written under capture_uri
    capture_rate: float = 0.0
    capture_uri: str | None = None
    capture_max_rows: int = 100_000
    capture_flush_seconds: float = 30.0


class _AccessLog:
    """One JSON line per request on stderr: request id, path, status, latency, model version."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.stream = sys.stderr.buffer if hasattr(sys.stderr, "buffer") else None

    def write(self, **fields: Any) -> None:
        if self.enabled and self.stream is not None:
            self.stream.write(orjson.dumps({"ts": time.time(), "logger": "ml.serve.access", **fields}) + b"\n")
            self.stream.flush()


def _json_line(level: str, message: str, **fields: Any) -> None:
    sys.stderr.write(orjson.dumps({"ts": time.time(), "level": level, "logger": "ml.serve",
                                   "message": message, **fields}).decode() + "\n")
    sys.stderr.flush()


class ModelServer:
    def __init__(self, config: ServeConfig):
        self.config = config
        self.metrics = ServerMetrics()
        self.current: LoadedModel | None = None
        self.batcher = MicroBatcher(config.max_batch, config.max_wait_ms / 1000.0, self.metrics.batch_rows.observe,
                                    config.predict_threads, batch_timeout=config.predict_timeout_s,
                                    on_failure=lambda reason: self.metrics.model_failures.labels(reason).inc())
        self.access = _AccessLog(config.access_log)
        self._swap_lock = asyncio.Lock()
        self._background: list[asyncio.Task] = []
        self._openapi: bytes | None = None
        self.protocol = OpenInference(self)
        self._v2 = RestRoutes(self.protocol)
        self._grpc = None
        self.capture = None
        if config.capture_rate > 0:
            if not config.capture_uri:
                raise ValueError("prediction capture needs --capture-uri (ML_SERVE_CAPTURE_URI): where to write "
                                 "the captured requests, e.g. the artifact root's captures/ folder")
            from ml.serving.capture import PredictionCapture

            self.capture = PredictionCapture(config.capture_uri, config.capture_rate, self.protocol.protocol_name,
                                             config.capture_max_rows, config.capture_flush_seconds, self.metrics,
                                             _json_line)
        self._aliases = {route: canonical for route, canonical in ((config.health_route, "/ping"),
                                                                   (config.predict_route, "/invocations")) if route}

    # ------------------------------------------------------------------ lifecycle
    async def startup(self) -> None:
        self.batcher.start()
        if self.capture is not None:
            await self.capture.start()
        if self.config.grpc_port is not None:
            from ml.serving.oip.grpc_server import start_grpc

            self._grpc = await start_grpc(self, self.config.grpc_host, self.config.grpc_port)
        if self.config.model_uri:
            await self.swap(self.config.model_uri, self.config.model_version)
        if self.config.registry_model:
            await self.follow_alias_once()
            self._background.append(asyncio.get_running_loop().create_task(self._follow_alias()))

    async def shutdown(self) -> None:
        for task in self._background:
            task.cancel()
        if self._grpc is not None:
            await self._grpc.stop(grace=5)
        await self.batcher.stop()
        if self.capture is not None:  # what is still buffered is written
            await self.capture.stop()

    async def swap(self, uri: str, version: str | None) -> dict[str, Any]:
        """Load beside the running model, verify and warm up, then switch in one assignment."""
        async with self._swap_lock:
            previous = self.current
            try:
                model = await asyncio.get_running_loop().run_in_executor(
                    None, lambda: load_model(uri, version, self.config.predict_timeout_s, self.config.max_text_chars))
            except Exception as exc:
                self.metrics.swaps.labels("refused").inc()
                _json_line("error", "model load refused; the current model keeps serving", uri=uri,
                           version=version, reason=str(exc),
                           serving=previous.version if previous else None)
                raise
            self.current = model  # the atomic switch; in-flight batches hold their own reference
            self._openapi = None
            self.metrics.serving(model.version, model.digest)
            self.metrics.swaps.labels("loaded").inc()
            _json_line("info", "serving model", version=model.version, uri=uri, digest=model.digest,
                       load_seconds=round(model.load_seconds, 3),
                       previous_version=previous.version if previous else None)
            return {"model_version": model.version, "previous_version": previous.version if previous else None,
                    "load_seconds": round(model.load_seconds, 3), "digest": model.digest}

    def _registry(self):
        from mlflow.tracking import MlflowClient

        return MlflowClient(tracking_uri=self.config.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI"))

    async def follow_alias_once(self) -> None:
        name, alias = self.config.registry_model, self.config.alias
        loop = asyncio.get_running_loop()
        mv = await loop.run_in_executor(None, lambda: self._registry().get_model_version_by_alias(name, alias))
        if self.current is None or self.current.version != str(mv.version):
            await self.swap(mv.source, str(mv.version))

    async def _follow_alias(self) -> None:
        while True:
            await asyncio.sleep(self.config.poll_seconds)
            try:
                await self.follow_alias_once()
            except Exception as exc:  # keep serving; say why the alias was not followed
                _json_line("warning", "alias not followed", alias=self.config.alias, reason=str(exc))

    # ------------------------------------------------------------------ HTTP
    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        started = time.perf_counter()
        path, method = scope["path"], scope["method"]
        path = self._aliases.get(path, path) if self._aliases else path
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        request_id = headers.get("x-request-id")
        if not request_id:  # the id is answered in the header, so that labelled feedback can name it
            request_id = headers["x-request-id"] = uuid.uuid4().hex
        model = self.current
        extra = ()
        try:
            answer = await self._route(path, method, headers, receive)
            status, body, content_type = answer[:3]
            if len(answer) > 3:
                extra = answer[3]
        except InputError as exc:
            status, body, content_type = exc.status, _error(str(exc)), b"application/json"
        except ModelFailure as exc:  # the model's own code failed this batch; the server goes on
            _json_line("error", "model failed a batch", request_id=request_id, reason=exc.reason, error=str(exc))
            status, body, content_type = exc.status, orjson.dumps(
                {"error": str(exc), "model_version": model.version if model else None}), b"application/json"
        except asyncio.TimeoutError:
            status, body, content_type = 503, _error("prediction timed out; retry"), b"application/json"
        except Exception as exc:  # a bug, not the client's fault: say so, keep serving
            _json_line("error", "unhandled error", request_id=request_id, path=path, error=repr(exc))
            status, body, content_type = 500, _error("internal error"), b"application/json"
        await send({"type": "http.response.start", "status": status, "headers": [
            (b"content-type", content_type), (b"content-length", str(len(body)).encode()),
            (b"x-request-id", request_id.encode()), *extra]})
        await send({"type": "http.response.body", "body": body})
        seconds = time.perf_counter() - started
        route = path if path in _ROUTES else self._v2.route_label(path) if path.startswith("/v2") else "other"
        self.metrics.observe(route, status, seconds)
        self.access.write(request_id=request_id, method=method, path=path, status=status,
                          latency_ms=round(seconds * 1000, 3), model_version=model.version if model else None)

    async def _route(self, path: str, method: str, headers: dict, receive) -> tuple:
        allowed = _ROUTES.get(path)
        if allowed is None and (path == "/v2" or path.startswith("/v2/")):
            return await self._open_inference(path, method, headers, receive)
        if allowed is None:
            await _drain(receive)
            return 404, _error(f"no route {path}; see /openapi.json"), b"application/json"
        if method not in allowed:
            await _drain(receive)
            return 405, _error(f"{method} not allowed on {path}; use {', '.join(sorted(allowed))}"), b"application/json"
        if path == "/invocations":
            return await self._invocations(headers, receive)
        if path == "/ping":
            model = self.current
            if model is None:
                return 503, _error("no model loaded yet"), b"application/json"
            return 200, orjson.dumps({"status": "ok", "model_version": model.version, "digest": model.digest,
                                      "source": model.uri, "model": model.name, "features": model.schema.names}), \
                b"application/json"
        if path == "/metrics":
            return 200, self.metrics.render(), b"text/plain; version=0.0.4"
        if path == "/openapi.json":
            if self._openapi is None:
                self._openapi = orjson.dumps(openapi_document(self.current.schema if self.current else None,
                                                              self.config.max_rows))
            return 200, self._openapi, b"application/json"
        if path == "/admin/model":
            return await self._admin(headers, receive)
        raise AssertionError(path)

    async def _invocations(self, headers: dict, receive) -> tuple[int, bytes, bytes]:
        batcher = self.batcher
        batcher.coming()
        try:
            body = await _read_body(receive, headers, self.config.max_body_bytes)
            model = self.current
            if model is None:
                return 503, _error("no model loaded yet"), b"application/json"
            matrix = parse_body(body, headers.get("content-type", ""), model.schema, self.config.max_rows)
        finally:
            batcher.came()
        # the request's own bound: the batch ahead of it and its own, each up to the predict timeout
        predictions = await batcher.predict(model, matrix, 2 * self.config.predict_timeout_s)
        if self.capture is not None:
            self.capture.offer(headers["x-request-id"], model, matrix, predictions)
        return 200, orjson.dumps({"predictions": predictions, "model_version": model.version},
                                 option=orjson.OPT_SERIALIZE_NUMPY), b"application/json"

    async def _open_inference(self, path: str, method: str, headers: dict, receive) -> tuple:
        """The Open Inference Protocol's REST routes (ml/serving/oip/rest.py)."""
        if method != "POST":
            await _drain(receive)
            return await self._v2.handle(path, method, headers, None)
        batcher = self.batcher

        async def read_body() -> bytes:
            batcher.coming()  # the batch being collected waits for this request's rows
            try:
                return await _read_body(receive, headers, self.config.max_body_bytes)
            finally:
                batcher.came()

        return await self._v2.handle(path, method, headers, read_body)

    async def _admin(self, headers: dict, receive) -> tuple[int, bytes, bytes]:
        body = await _read_body(receive, headers, 64 * 1024)
        token = self.config.admin_token
        if not token:
            return 404, _error("admin endpoint disabled: start the server with ML_SERVE_ADMIN_TOKEN set"), \
                b"application/json"
        given = headers.get("authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            return 401, _error("missing or wrong bearer token"), b"application/json"
        try:
            request = orjson.loads(body)
        except orjson.JSONDecodeError:
            request = None
        if not isinstance(request, dict) or not (isinstance(request.get("uri"), str) or (
                self.config.registry_model and request.get("version") is not None)) or \
                not isinstance(request.get("name", ""), str):
            raise InputError('admin body must be {"uri": "<model artifact URI>", "version": "<label>"}, or '
                             '{"version": "<registry version>"} when the server follows a registered model; '
                             'optionally "name": the registered model\'s name, for the Open Inference Protocol')
        try:
            uri = request.get("uri")
            if uri is None:  # a version of the followed registered model: its source is the artifact
                name, version = self.config.registry_model, str(request["version"])
                mv = await asyncio.get_running_loop().run_in_executor(
                    None, lambda: self._registry().get_model_version(name, version))
                uri = mv.source
            check_inside(uri, self.config.artifact_roots)
            result = await self.swap(uri, str(request["version"]) if request.get("version") else None)
            if request.get("name"):
                self.config.name = request["name"]
        except OutsideArtifactRoots as exc:
            serving = self.current.version if self.current else None
            return 403, orjson.dumps({"error": f"model refused: {exc}", "model_version": serving}), b"application/json"
        except Exception as exc:
            serving = self.current.version if self.current else None
            return 422, orjson.dumps({"error": f"model refused: {exc}", "model_version": serving}), b"application/json"
        return 200, orjson.dumps(result), b"application/json"

    async def _lifespan(self, receive, send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as exc:
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return


_ROUTES = {
    "/invocations": {"POST"},
    "/ping": {"GET"},
    "/metrics": {"GET"},
    "/openapi.json": {"GET"},
    "/admin/model": {"POST"},
}


def _error(message: str) -> bytes:
    return orjson.dumps({"error": message})


async def _drain(receive) -> None:
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)


async def _read_body(receive, headers: dict, limit: int) -> bytes:
    declared = headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise InputError("invalid Content-Length header")
        if int(declared) > limit:
            raise InputError(f"body of {declared} bytes exceeds the {limit}-byte limit", 413)
    chunks, size, more = [], 0, True
    while more:
        message = await receive()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise InputError(f"body exceeds the {limit}-byte limit", 413)
        chunks.append(chunk)
        more = message.get("more_body", False)
    return b"".join(chunks)
