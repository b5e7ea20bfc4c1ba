"""Registry credentials from a connection reach the tracking server and nothing else: not
``os.environ`` (inherited by every child process), not another registry's clients, not a repr."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from airflow.sdk import Connection

from operators.registry.mlflow_tracking import target_from_connection


class TrackingServer(ThreadingHTTPServer):
    """Answers MLflow's get-registered-model call and records each request's Authorization."""

    def __init__(self):
        self.auth: list[str | None] = []

        class Handler(BaseHTTPRequestHandler):
            def do_GET(handler):  # noqa: N805
                self.auth.append(handler.headers.get("Authorization"))
                body = json.dumps({"registered_model": {"name": "m", "creation_timestamp": 1}}).encode()
                handler.send_response(200)
                handler.send_header("Content-Type", "application/json")
                handler.send_header("Content-Length", str(len(body)))
                handler.end_headers()
                handler.wfile.write(body)

            def log_message(handler, *args):  # noqa: N805
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()


@pytest.fixture
def servers():
    started = [TrackingServer(), TrackingServer()]
    yield started
    for server in started:
        server.shutdown()


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_each_registry_gets_its_own_credentials_and_the_environment_none(servers, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD", raising=False)
    alice = Connection(conn_id="a", conn_type="http", host="127.0.0.1", port=servers[0].server_address[1],
                       login="alice", password="planted-secret-a1")
    bob = Connection(conn_id="b", conn_type="http", host="127.0.0.1", port=servers[1].server_address[1],
                     login="bob", password="planted-secret-b2")
    first, second = target_from_connection(alice, "a"), target_from_connection(bob, "b")
    assert first.client().get_registered_model("m").name == "m"
    assert second.client().get_registered_model("m").name == "m"
    assert servers[0].auth == [basic("alice", "planted-secret-a1")]
    assert servers[1].auth == [basic("bob", "planted-secret-b2")]
    assert "planted-secret" not in repr(first) + str(second)
    assert not [k for k, v in os.environ.items() if "planted-secret" in v or k.startswith("MLFLOW_TRACKING_")]
    child = subprocess.run([sys.executable, "-c", "import os; print(dict(os.environ))"], capture_output=True,
                           text=True, check=True)
    assert "planted-secret" not in child.stdout


def test_a_connection_without_login_sends_no_credentials(servers):
    anonymous = Connection(conn_id="c", conn_type="http", host="127.0.0.1", port=servers[0].server_address[1])
    target_from_connection(anonymous, "c").client().get_registered_model("m")
    assert servers[0].auth == [None]


def test_a_connection_naming_no_registry_says_what_to_set():
    with pytest.raises(Exception, match="neither extra.tracking_uri nor a host"):
        target_from_connection(Connection(conn_id="empty", conn_type="generic"), "empty")
