"""The load scenario: single rows and batches against ml.serve's /invocations, judged by slo.toml.

A request is *valid* when it is answered 200 with one prediction per row sent and the model
version that made them; anything else (4xx/5xx, refused connection, timeout, wrong count) is
a failure, counted by reason. At the end (run time, request bound, or SIGTERM) the figures go
to ``--report`` as JSON and to stdout, and the exit code says whether the SLO held.

Run through ``python -m tests.load`` (``make load-test``) or ``tests/load/locust_load.py``;
Locust's own options (users, run time, host) come from there.
"""

from __future__ import annotations

import json
import random
import time
import tomllib
from collections import Counter
from pathlib import Path

import gevent
from locust import FastHttpUser, events, task

from tests.load.slo import format_report, judge, percentile

_state = {"latencies_ms": [], "valid": 0, "requests": 0, "failures": Counter(), "versions": Counter(),
          "started": None, "flowing_marked": False}


@events.init_command_line_parser.add_listener
def _arguments(parser):
    parser.add_argument("--payloads", required=True, help="JSON file: {'columns': [...], 'rows': [[...], ...]}")
    parser.add_argument("--slo", default=str(Path(__file__).with_name("slo.toml")), help="the SLO file")
    parser.add_argument("--report", required=True, help="where the JSON report goes")
    parser.add_argument("--max-requests", type=int, default=0, help="stop after this many requests (0: no bound)")
    parser.add_argument("--batch-rows", type=int, default=32)
    parser.add_argument("--batch-share", type=float, default=0.1)
    parser.add_argument("--think-ms", type=float, default=0.0,
                        help="each user's pause between requests (0: closed loop, the users are the concurrency)")


class ServeUser(FastHttpUser):
    """One closed-loop client: no think time unless --think-ms, so the users are the concurrency."""

    connection_timeout = 5.0
    network_timeout = 10.0

    def wait_time(self) -> float:
        return self.environment.parsed_options.think_ms / 1000

    def on_start(self):
        options = self.environment.parsed_options
        doc = json.loads(Path(options.payloads).read_text())
        rows, columns = doc["rows"], doc["columns"]
        self.batch_share = options.batch_share
        self.single = [json.dumps({"inputs": [row]}).encode() for row in rows]
        n = max(1, options.batch_rows)
        batch = [rows[i % len(rows)] for i in range(n)]
        self.batch = json.dumps({"dataframe_split": {"columns": columns, "data": batch}}).encode()
        self.batch_rows = n

    @task
    def invoke(self):
        if random.random() < self.batch_share:
            body, rows, name = self.batch, self.batch_rows, "batch"
        else:
            body, rows, name = random.choice(self.single), 1, "single row"
        with self.client.post("/invocations", data=body, headers={"Content-Type": "application/json"},
                              name=name, catch_response=True) as resp:
            reason = _invalid_reason(resp, rows)
            if reason is None:
                resp.success()
            else:
                resp.failure(reason)
        if reason is not None:
            gevent.sleep(0.01)  # a dead server is retried, not hammered in a tight loop


def _invalid_reason(resp, rows: int) -> str | None:
    if not resp.status_code:  # no HTTP answer at all: refused, reset, timed out
        return f"connection: {type(getattr(resp, 'error', None)).__name__}"
    if resp.status_code != 200:
        return f"HTTP {resp.status_code}"
    try:
        doc = json.loads(resp.content)
    except ValueError:
        return "200 with a body that is not JSON"
    predictions, version = doc.get("predictions"), doc.get("model_version")
    if not isinstance(predictions, list) or len(predictions) != rows:
        return f"200 with {len(predictions) if isinstance(predictions, list) else 'no'} predictions for {rows} rows"
    if not version:
        return "200 without model_version"
    _state["versions"][str(version)] += 1
    return None


@events.request.add_listener
def _count(request_type, name, response_time, response_length, exception, context, **kwargs):
    state = _state
    state["requests"] += 1
    if state["started"] is None:
        state["started"] = time.monotonic()
    if exception is None:
        state["valid"] += 1
        state["latencies_ms"].append(response_time)
    else:
        state["failures"][str(exception).split("\n")[0][:120]] += 1
    env = _environment
    if env is None:
        return
    options = env.parsed_options
    if not state["flowing_marked"] and state["valid"] >= 50:  # tells a waiting test that load is flowing
        state["flowing_marked"] = True
        Path(options.report + ".flowing").write_text(str(state["valid"]))
    if options.max_requests and state["requests"] == options.max_requests:
        gevent.spawn(env.runner.quit)


_environment = None


@events.init.add_listener
def _keep(environment, **kwargs):
    global _environment
    _environment = environment


@events.quitting.add_listener
def _report(environment, **kwargs):
    options = environment.parsed_options
    state = _state
    latencies = sorted(state["latencies_ms"])
    seconds = time.monotonic() - state["started"] if state["started"] else 0.0
    report = {
        "requests": state["requests"], "valid": state["valid"],
        "valid_rate": state["valid"] / state["requests"] if state["requests"] else 0.0,
        **{f"p{q}_ms": (round(v, 3) if v is not None else None)
           for q, v in ((50, percentile(latencies, 50)), (95, percentile(latencies, 95)),
                        (99, percentile(latencies, 99)))},
        "seconds": round(seconds, 2), "rps": round(state["requests"] / seconds, 1) if seconds else 0.0,
        "users": options.num_users, "versions": dict(state["versions"]), "failures": dict(state["failures"]),
    }
    objective = tomllib.loads(Path(options.slo).read_text())["objective"]
    report["objective"] = objective
    report["breaches"] = judge(report, objective)
    Path(options.report).write_text(json.dumps(report, indent=2))
    print(format_report(report), flush=True)
    environment.process_exit_code = 1 if report["breaches"] else 0
