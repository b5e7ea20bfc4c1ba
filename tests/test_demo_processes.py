"""Stopping what the launchers started: a child that exited is reaped, so a stop returns when the
process is gone instead of waiting out its timeout on a zombie (every Airflow stack's teardown
took 30 s more than it needed, and the test dockerd's too); and the REST client the tests drive
Airflow with, which asks a slow api-server again for a GET but never repeats a POST."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from demo.local_airflow import AirflowRest


def test_a_stopped_child_process_is_gone_at_once_not_after_the_timeout():
    from demo.container_engine import _stop_pid

    child = subprocess.Popen(["sleep", "300"])
    started = time.monotonic()
    _stop_pid(child.pid, timeout=20)
    assert time.monotonic() - started < 10
    assert child.poll() is not None or not os.path.exists(f"/proc/{child.pid}")


def test_an_exited_process_group_leader_started_here_counts_as_gone():
    from demo.local_airflow import _group_alive

    leader = subprocess.Popen(["sleep", "300"], start_new_session=True)
    assert _group_alive(leader.pid)
    os.killpg(leader.pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while _group_alive(leader.pid):
        assert time.monotonic() < deadline, "the exited leader was still counted (a zombie)"
        time.sleep(0.1)


class _SlowOnce(ThreadingHTTPServer):
    """Answers every request, the first GET only after ``delay`` seconds (a loaded api-server)."""

    def __init__(self, delay: float):
        self.requests: list[str] = []

        class Handler(BaseHTTPRequestHandler):
            def _answer(handler, body: bytes):  # noqa: N805
                handler.send_response(200)
                handler.send_header("Content-Type", "application/json")
                handler.send_header("Content-Length", str(len(body)))
                handler.end_headers()
                handler.wfile.write(body)

            def do_GET(handler):  # noqa: N805
                self.requests.append("GET")
                if len(self.requests) == 1:
                    time.sleep(delay)
                handler._answer(b'{"state": "success"}')

            def do_POST(handler):  # noqa: N805
                self.requests.append("POST")
                time.sleep(delay)
                handler._answer(b'{"dag_run_id": "r"}')

            def log_message(handler, *args):  # noqa: N805
                pass

        super().__init__(("127.0.0.1", 0), Handler)


def test_a_get_that_times_out_is_asked_again_and_a_post_is_not():
    server = _SlowOnce(delay=1.5)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        api = AirflowRest(f"http://127.0.0.1:{server.server_address[1]}", timeout=0.5)
        api._token = "t"
        assert api.run_state("d", "r") == "success"
        assert server.requests == ["GET", "GET"]
        with pytest.raises(TimeoutError, match="POST /api/v2/dags/d/dagRuns: no answer .* in 0.5 s \\(1 attempt"):
            api.trigger("d")
        assert server.requests == ["GET", "GET", "POST"]
    finally:
        server.shutdown()
