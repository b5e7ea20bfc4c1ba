"""The model server when things go wrong inside it, driven as the ASGI app uvicorn runs: a
predict that overruns its timeout or raises answers 504/500 and the next request is served; a
model that cannot load fails the startup (uvicorn exits) instead of serving nothing; an alias
the registry cannot resolve keeps the current model serving and says why."""

from __future__ import annotations

import asyncio
import json
import time
from unittest import mock

import orjson
import pytest

from ml.serving.app import ModelServer, ServeConfig
from tests.serving_helpers import in_process


async def call(server: ModelServer, method: str, path: str, body: bytes = b"", headers: dict | None = None):
    """One request through the ASGI interface: (status, decoded JSON body)."""
    sent, chunks = [], [{"type": "http.request", "body": body, "more_body": False}]

    async def receive():
        return chunks.pop(0) if chunks else {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    raw_headers = [(k.lower().encode(), v.encode()) for k, v in {"content-type": "application/json",
                                                                  "content-length": str(len(body)),
                                                                  **(headers or {})}.items()]
    await server({"type": "http", "method": method, "path": path, "headers": raw_headers}, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    payload = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], json.loads(payload) if payload.startswith(b"{") else payload


@pytest.fixture
def serve(trained_models):
    """Run ``scenario(server)`` against a started server of model v1."""
    def run(scenario, **config):
        return in_process(scenario, model_uri=trained_models["1"], model_version="1", **config)
    return run


def body(trained_models) -> bytes:
    return orjson.dumps({"inputs": trained_models["rows"][:2]})


def test_a_predict_over_its_timeout_is_a_504_naming_the_model_and_the_next_request_is_served(serve, trained_models):
    async def scenario(server):
        model = server.current
        real = model.predict

        def hung(matrix):  # the predict thread stalls far past the request's timeout
            time.sleep(0.5)
            return real(matrix)

        # a model that predicts slowly is predicted in the predict thread, where its timeout applies
        with mock.patch.object(model, "predict", hung), mock.patch.object(model, "inline_predict", False):
            started = time.monotonic()
            timed_out = await call(server, "POST", "/invocations", body(trained_models))
            waited = time.monotonic() - started
            await asyncio.sleep(0.6)  # the stalled predict ends; its late result goes nowhere
        return timed_out, waited, await call(server, "POST", "/invocations", body(trained_models))

    (status, answer), waited, (after, served) = serve(scenario, predict_timeout_s=0.05)
    assert status == 504 and answer == {"error": "model 'sklearn' version 1 took longer than 0.05 s to predict 2 rows",
                                        "model_version": "1"}
    assert waited < 0.4  # answered at the timeout, not when the predict returned
    assert after == 200 and served["model_version"] == "1" and len(served["predictions"]) == 2


def test_a_bug_in_predict_is_a_500_saying_internal_error_and_the_server_keeps_serving(serve, trained_models, capfd):
    async def scenario(server):
        with mock.patch.object(server.batcher, "predict", side_effect=RuntimeError("boom")):
            failed = await call(server, "POST", "/invocations", body(trained_models), {"x-request-id": "req-7"})
        return failed, await call(server, "POST", "/invocations", body(trained_models))

    (status, answer), (after, _) = serve(scenario)
    assert status == 500 and answer == {"error": "internal error"}  # no internals to the client
    assert after == 200
    line = next(json.loads(l) for l in capfd.readouterr().err.splitlines() if "unhandled error" in l)
    assert line["request_id"] == "req-7" and "boom" in line["error"]  # but in the server's log


def test_bad_headers_and_other_protocols_are_answered_or_ignored(serve, trained_models):
    async def scenario(server):
        sent = []

        async def receive():
            return {"type": "websocket.connect"}

        async def send(message):
            sent.append(message)

        await server({"type": "websocket", "path": "/", "headers": []}, receive, send)
        bad_length = await call(server, "POST", "/invocations", body(trained_models), {"content-length": "12a"})
        no_admin = await call(server, "POST", "/admin/model", b'{"uri": "x"}')
        return sent, bad_length, no_admin

    sent, (status, answer), (admin_status, admin) = serve(scenario)
    assert sent == []  # a websocket is not ours to answer
    assert status == 400 and answer == {"error": "invalid Content-Length header"}
    assert admin_status == 404 and "start the server with ML_SERVE_ADMIN_TOKEN" in admin["error"]


def test_a_model_that_cannot_load_fails_the_startup(tmp_path):
    async def lifespan():
        server = ModelServer(ServeConfig(model_uri=str(tmp_path / "missing"), access_log=False))
        messages, sent = [{"type": "lifespan.startup"}], []

        async def receive():
            return messages.pop(0)

        async def send(message):
            sent.append(message)

        await server({"type": "lifespan"}, receive, send)
        await server.shutdown()
        return sent

    (failed,) = asyncio.run(lifespan())
    assert failed["type"] == "lifespan.startup.failed" and "no manifest" in failed["message"]


def test_an_alias_the_registry_cannot_resolve_keeps_the_model_serving_and_says_why(serve, trained_models, capfd):
    async def scenario(server):
        server.config = ServeConfig(**{**server.config.__dict__, "registry_model": "churn", "poll_seconds": 0.01})
        with mock.patch.object(ModelServer, "_registry", side_effect=ConnectionError("registry unreachable")):
            follower = asyncio.get_running_loop().create_task(server._follow_alias())
            await asyncio.sleep(0.1)
            follower.cancel()
        return await call(server, "POST", "/invocations", body(trained_models))

    status, answer = serve(scenario)
    assert status == 200 and answer["model_version"] == "1"
    warning = next(json.loads(l) for l in capfd.readouterr().err.splitlines() if "alias not followed" in l)
    assert warning["alias"] == "production" and "registry unreachable" in warning["reason"]
