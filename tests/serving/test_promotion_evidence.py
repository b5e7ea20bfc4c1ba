"""Promotion evidence read from real ml.serve servers' /metrics: a candidate that serves well is
promoted once it has served enough; one that answers errors is refused at once; a level below
that no longer serves the candidate gives no evidence for it."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from operators.deploy.evidence import Rules, Sample, verdict
from tests.serving_helpers import ServerProcess, request

REPO_ROOT = Path(__file__).resolve().parents[2]


def sample(requests, errors, latencies: dict[float, float]) -> Sample:
    """latencies: upper bound -> cumulative count (the +Inf bucket is the total)."""
    return Sample(requests, errors, tuple(sorted({**latencies, float("inf"): requests}.items())))


RULES = Rules(min_requests=100, max_error_rate_increase=0.01, max_p99_increase=0.25)


@pytest.mark.parametrize("candidate,incumbent,decision,says", [
    (sample(99, 0, {0.01: 99}), sample(500, 0, {0.01: 500}), "wait", "fewer than 100 requests yet"),
    (sample(200, 1, {0.01: 200}), sample(500, 0, {0.01: 500}), "promote", "within the tolerances"),
    (sample(200, 3, {0.01: 200}), sample(500, 0, {0.01: 500}), "refuse", "error rate above 0.0100"),
    (sample(200, 6, {0.01: 200}), sample(500, 10, {0.01: 500}), "promote", "within"),  # 0.03 <= 0.02 + 0.01
    (sample(200, 0, {0.01: 150, 0.05: 200}), sample(500, 0, {0.01: 500}), "refuse", "p99 above 12.4 ms"),
    (sample(200, 0, {0.01: 199, 0.0125: 200}), sample(500, 0, {0.01: 500}), "promote", "within"),
    (sample(200, 2, {0.05: 200}), None, "promote", "no incumbent traffic"),  # p99 not compared, errors <= 0.01
    (sample(200, 3, {0.05: 200}), sample(0, 0, {}), "refuse", "no incumbent traffic"),
])
def test_the_verdict_compares_the_candidate_with_the_incumbent_over_the_same_window(candidate, incumbent, decision,
                                                                                      says):
    got, why = verdict(candidate, incumbent, RULES)
    assert got == decision and says in why, why


def test_p99_is_read_like_prometheus_histogram_quantile():
    assert sample(200, 0, {0.01: 100, 0.02: 200}).p99 == pytest.approx(0.0198)  # 0.01 + 0.01 * 98/100
    assert sample(200, 0, {0.01: 150}).p99 == 0.01  # in the +Inf bucket: the highest finite bound
    assert sample(0, 0, {}).p99 is None


def test_a_window_is_the_difference_of_two_samples_and_a_restart_starts_it_over():
    first, later = sample(100, 2, {0.01: 90}), sample(160, 5, {0.01: 140})
    window = later.since(first)
    assert (window.requests, window.errors, dict(window.buckets)) == (60, 3, {0.01: 50, float("inf"): 60})
    restarted = sample(10, 0, {0.01: 10})
    assert restarted.since(first) == restarted


def evidence(lower: str, higher: str | None, version: str, rules: Rules, seconds: float = 20) -> dict:
    from operators.deploy.evidence_trigger import EvidenceTrigger, read_sample

    first = {"lower": read_sample(lower).as_dict(), "higher": read_sample(higher).as_dict() if higher else None}
    deadline = (datetime.now(timezone.utc) + timedelta(seconds=seconds)).isoformat()
    trigger = EvidenceTrigger(lower, higher, version, first, vars(rules), deadline, poll_interval=0.1)
    path, kwargs = trigger.serialize()
    assert path == "operators.deploy.evidence_trigger.EvidenceTrigger"
    kwargs = json.loads(json.dumps(kwargs, allow_nan=False))  # it must survive the triggerer's table (strict JSON)
    trigger = EvidenceTrigger(**kwargs)

    async def first_event():
        async for event in trigger.run():
            return event.payload

    return asyncio.run(first_event())


def invoke(url: str, rows: list, n: int) -> None:
    for _ in range(n):
        request(url + "/invocations", json.dumps({"instances": rows}).encode())


def test_real_servers_give_evidence_for_a_good_version_and_against_one_that_errors(trained_models):
    rows = trained_models["rows"]
    with ServerProcess("--model", trained_models["1"], "--model-version", "1") as higher, \
            ServerProcess("--model", trained_models["2"], "--model-version", "2") as lower:
        invoke(higher.url, rows, 5)  # traffic before the window does not count
        rules = Rules(min_requests=20, max_error_rate_increase=0.05, max_p99_increase=10.0)
        from operators.deploy.evidence_trigger import read_sample

        first = read_sample(lower.url)
        invoke(lower.url, rows, 25)
        invoke(higher.url, rows, 25)
        window = read_sample(lower.url).since(first)
        assert (window.requests, window.errors, window.version) == (25, 0, "2") and window.p99 is not None
        # A fresh window: traffic goes on while the trigger waits, and it promotes once 20 were served.
        import threading

        feeder = threading.Thread(target=lambda: (invoke(lower.url, rows, 30), invoke(higher.url, rows, 30)))
        feeder.start()
        event = evidence(lower.url, higher.url, "2", rules)
        feeder.join()
        assert event["decision"] == "promote", event
        # The same candidate now answers errors: rows with a missing feature are refused (4xx).
        feeder = threading.Thread(target=lambda: (invoke(lower.url, [r[:-1] for r in rows], 30),
                                                  invoke(higher.url, rows, 30)))
        feeder.start()
        event = evidence(lower.url, higher.url, "2", rules)
        feeder.join()
        assert event["decision"] == "refuse" and "error rate above" in event["reason"], event
        # Asked for another version than the level below serves: no evidence for it there.
        event = evidence(lower.url, higher.url, "7", rules)
        assert event["decision"] == "refuse" and "serves version 2 now, not 7" in event["reason"]
    # Not enough traffic within the window: a timeout, which the operator turns into a failure.
    with ServerProcess("--model", trained_models["2"], "--model-version", "2") as quiet:
        event = evidence(quiet.url, None, "2", rules, seconds=0.5)
        assert event["decision"] == "timeout" and "fewer than 20 requests" in event["reason"]


def test_the_operator_fails_a_refusal_or_timeout_saying_why_and_that_the_higher_level_keeps_its_version():
    from airflow.sdk.exceptions import AirflowFailException

    from operators.deploy.promotion import AwaitEvidenceOperator

    op = AwaitEvidenceOperator(task_id="evidence_production", version="2",
                               lower={"endpoint": "m-dev", "target": "local", "conn_id": "ml_endpoint_m_dev"},
                               higher={"endpoint": "m-prod", "target": "local", "conn_id": "ml_endpoint_m_prod"},
                               rules={"min_requests": 10})
    # one retry, for a try lost outside the task; a verdict is an AirflowFailException, which never retries
    assert op.retries == 1
    promoted = {"decision": "promote", "reason": "20 requests ..."}
    assert op.decided({}, promoted) == promoted
    with pytest.raises(AirflowFailException, match=r"not promoted to m-prod \(evidence against it\): why; m-prod keeps"):
        op.decided({}, {"decision": "refuse", "reason": "why"})
    with pytest.raises(AirflowFailException, match=r"not enough evidence within the window"):
        op.decided({}, {"decision": "timeout", "reason": "why"})


def test_the_trigger_fires_nothing_before_it_settles_so_the_scheduler_has_seen_the_deferral():
    """Airflow 3.3.2 fails a deferred task whose trigger fires before the scheduler processed the
    deferring try's exit (apache/airflow#67287): the evidence waits settle_seconds first."""
    import asyncio
    import time
    from datetime import datetime, timezone

    from operators.deploy.evidence_trigger import EvidenceTrigger
    from operators.deploy.promotion import SETTLE_SECONDS
    from tests.conftest import free_port

    assert SETTLE_SECONDS >= 10
    now = datetime.now(timezone.utc).isoformat()  # the deadline has passed: the first look decides
    trigger = EvidenceTrigger(f"http://127.0.0.1:{free_port()}", None, "2", {"lower": None, "higher": None},
                              {"min_requests": 20}, now, poll_interval=0.1, settle_seconds=1.0)

    async def first_event():
        async for event in trigger.run():
            return event.payload

    started = time.monotonic()
    event = asyncio.run(first_event())
    assert event["decision"] == "timeout" and time.monotonic() - started >= 1.0


def test_the_settle_is_twenty_seconds_unless_the_environment_says_otherwise(monkeypatch):
    """`make demo` (airflow dags test: the trigger runs inline, no scheduler to race) sets it to 0."""
    from operators.deploy.promotion import SETTLE_SECONDS, settle_seconds

    monkeypatch.delenv("ML_EVIDENCE_SETTLE_SECONDS", raising=False)
    assert settle_seconds() == SETTLE_SECONDS == 20.0
    monkeypatch.setenv("ML_EVIDENCE_SETTLE_SECONDS", "0")
    assert settle_seconds() == 0.0
    assert "export ML_EVIDENCE_SETTLE_SECONDS=0" in (REPO_ROOT / "demo" / "run_demo.sh").read_text()


def test_evidence_counts_every_prediction_route_and_nothing_else():
    from ml.serving.metrics import ServerMetrics
    from operators.deploy.evidence import parse_metrics

    metrics = ServerMetrics()
    for path, code, seconds in [("/invocations", 200, 0.001), ("/v2/infer", 200, 0.004), ("/v2/infer", 400, 0.001),
                                ("grpc/ModelInfer", 200, 0.02), ("grpc/ModelInfer", 503, 0.001),
                                ("/ping", 200, 0.0001), ("/v2/health", 200, 0.0001), ("grpc/ServerLive", 200, 0.0)]:
        metrics.observe(path, code, seconds)
    seen = parse_metrics(metrics.render().decode())
    assert (seen.requests, seen.errors) == (5, 2)
    assert dict(seen.buckets)[0.001] == 3 and dict(seen.buckets)[0.005] == 4 and dict(seen.buckets)[float("inf")] == 5
