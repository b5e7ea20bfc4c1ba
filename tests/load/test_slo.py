"""The load test's judgement, on real Locust runs against a real ml.serve: a held SLO exits 0,
a breached one exits 1 naming what was breached, and invalid answers are counted by reason.
The figures themselves (does ml.serve hold p95 <= 20 ms here?) are `make load-test`'s, not a test's."""

from __future__ import annotations

import pytest

from tests.load.__main__ import serve_a_model
from tests.load.locust_load import LocustLoad
from tests.load.slo import judge, percentile

pytestmark = pytest.mark.serial  # it asserts latencies: alone, not beside another worker (Makefile: test)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    server, columns, rows = serve_a_model(tmp_path_factory.mktemp("slo"))
    with server:
        yield server, columns, rows


def slo_file(path, **objective) -> str:
    values = {"valid_rate_min": 0.99, "p95_ms_max": 10_000.0, "min_requests": 300, **objective}
    path.write_text("[objective]\n" + "".join(f"{k} = {v}\n" for k, v in values.items()) +
                    "[load]\nusers = 4\nseconds = 20\nmax_requests = 400\nbatch_rows = 8\nbatch_share = 0.25\n")
    return path


def test_a_held_slo_exits_0_with_the_figures(served, tmp_path):
    server, columns, rows = served
    load = LocustLoad(server.url, columns, rows, tmp_path / "run", slo_file=slo_file(tmp_path / "slo.toml"))
    report = load.start(wait_flowing=0).wait(timeout=60)
    assert report["exit_code"] == 0, load.printed()[-2000:]
    assert report["breaches"] == []
    assert 400 <= report["requests"] < 480  # bounded by max_requests (users finishing their request)
    assert report["valid"] == report["requests"] and report["valid_rate"] == 1.0
    assert 0 < report["p50_ms"] <= report["p95_ms"] <= report["p99_ms"]
    (version, count), = report["versions"].items()  # one model answered every valid request
    assert count == report["valid"]
    printed = load.printed()
    assert "valid rate 100.0000%" in printed and f"p95 {report['p95_ms']} ms" in printed
    assert "): held" in printed


def test_a_breached_latency_objective_exits_1_and_names_it(served, tmp_path):
    server, columns, rows = served
    load = LocustLoad(server.url, columns, rows, tmp_path / "run",
                      slo_file=slo_file(tmp_path / "slo.toml", p95_ms_max=0.001))
    report = load.start(wait_flowing=0).wait(timeout=60)
    assert report["exit_code"] == 1
    assert report["valid_rate"] == 1.0
    assert report["breaches"] == [f"p95 {report['p95_ms']} ms is above 0.001 ms"]
    assert "BREACHED: p95" in load.printed()


def test_invalid_answers_are_failures_counted_by_reason(served, tmp_path):
    server, columns, rows = served
    narrow = [row[:-1] for row in rows]  # one feature short: the server answers 400
    load = LocustLoad(server.url, columns[:-1], narrow, tmp_path / "run", slo_file=slo_file(tmp_path / "slo.toml"))
    report = load.start(wait_flowing=0).wait(timeout=60)
    assert report["exit_code"] == 1
    assert report["valid"] == 0 and report["requests"] >= 300
    assert report["failures"] == {"HTTP 400": report["requests"]}
    assert report["breaches"][0] == "valid rate 0.0000% is below 99.0000%"
    assert report["p95_ms"] is None


def test_nothing_listening_is_counted_as_connection_failures(tmp_path):
    from tests.conftest import free_port

    load = LocustLoad(f"http://127.0.0.1:{free_port()}", ["a"], [[1.0]], tmp_path / "run",
                      slo_file=slo_file(tmp_path / "slo.toml", min_requests=1), seconds=3, max_requests=0)
    report = load.start(wait_flowing=0).wait(timeout=60)
    assert report["exit_code"] == 1 and report["valid"] == 0 and report["requests"] > 0
    assert set(report["failures"]) == {"connection: ConnectionRefusedError"}, report["failures"]


def test_percentile_is_nearest_rank_and_judge_says_what_was_measured():
    values = sorted(float(v) for v in range(1, 101))
    assert (percentile(values, 50), percentile(values, 95), percentile(values, 99)) == (50.0, 95.0, 99.0)
    assert percentile([7.0], 99) == 7.0 and percentile([], 50) is None
    objective = {"valid_rate_min": 0.9999, "p95_ms_max": 20.0, "min_requests": 10_000}
    held = {"requests": 20_000, "valid_rate": 0.99995, "p95_ms": 19.9}
    assert judge(held, objective) == []
    one_too_many_failures = {"requests": 20_000, "valid_rate": 19_997 / 20_000, "p95_ms": 3.0}
    assert judge(one_too_many_failures, objective) == ["valid rate 99.9850% is below 99.9900%"]
    assert judge({"requests": 9_999, "valid_rate": 1.0, "p95_ms": 3.0}, objective) == [
        "9999 requests are too few to judge a valid rate of 99.9900%: at least 10000 are needed"]
