"""Where a single-row request's time goes in ml.serve: the same model as benchmarks/serving.py,
one request at a time, each stage timed on its own in this process, beside the whole round
trip over HTTP to a real server (one connection, no concurrency: latency, not throughput).

Stages: reading and parsing the JSON body into a feature row (``parse_body``), the estimator's
``predict`` on one row called directly, the micro-batcher's hand-off to its predict thread and
back (its cost beyond ``predict``), serialising the answer (orjson), and the rest: HTTP
parsing, the ASGI call, the access log line and the kernel's loopback, measured as the round
trip minus the stages. The alternative a user would otherwise pick is in the same table:
MLflow's scoring server's round trip for the same row.

    python benchmarks/serving_profile.py [--requests 2000]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serving import BIN, REPO, build_models, running  # noqa: E402


def per_call_us(fn, n: int) -> float:
    """Median of ``n`` timed calls, in microseconds (the median resists the odd scheduler hiccup)."""
    times = []
    for _ in range(n):
        started = time.perf_counter_ns()
        fn()
        times.append(time.perf_counter_ns() - started)
    return statistics.median(times) / 1000


def round_trip_us(port: int, body: bytes, n: int) -> float:
    conn = http.client.HTTPConnection("127.0.0.1", port)
    headers = {"Content-Type": "application/json"}
    for _ in range(50):  # warm the connection and the server's code paths
        conn.request("POST", "/invocations", body, headers)
        conn.getresponse().read()

    def one():
        conn.request("POST", "/invocations", body, headers)
        response = conn.getresponse()
        response.read()
        assert response.status == 200

    result = per_call_us(one, n)
    conn.close()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    args = parser.parse_args()
    n = args.requests
    import orjson
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)  # as the server's predict thread runs (--predict-threads 1)

    from ml.serving.app import ServeConfig
    from ml.serving.batcher import MicroBatcher
    from ml.serving.inputs import parse_body
    from ml.serving.model import load_model

    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "PYTHONPATH": str(REPO)}
    with tempfile.TemporaryDirectory(prefix="bench-profile-") as tmp:
        work = Path(tmp)
        ours_uri, mlflow_uri, row = build_models(work)
        body = json.dumps({"inputs": [row]}).encode()
        model = load_model(ours_uri, "1")
        matrix = parse_body(body, "application/json", model.schema, 10_000)
        predictions = model.predict(matrix)

        stages = {
            "parse JSON body -> feature row": per_call_us(
                lambda: parse_body(body, "application/json", model.schema, 10_000), n),
            "estimator.predict, one row": per_call_us(lambda: model.predict(matrix), n),
            "serialise the answer (orjson)": per_call_us(
                lambda: orjson.dumps({"predictions": predictions, "model_version": "1"},
                                     option=orjson.OPT_SERIALIZE_NUMPY), n),
        }

        async def batcher_us() -> float:
            batcher = MicroBatcher(max_batch=64, max_wait=ServeConfig.max_wait_ms / 1000)  # the server's default
            batcher.start()
            try:
                for _ in range(50):
                    await batcher.predict(model, matrix)
                times = []
                for _ in range(n):
                    started = time.perf_counter_ns()
                    await batcher.predict(model, matrix)
                    times.append(time.perf_counter_ns() - started)
                return statistics.median(times) / 1000
            finally:
                await batcher.stop()

        import uvloop

        through_batcher = uvloop.run(batcher_us())  # the server's loop (uvicorn --loop uvloop)
        stages["micro-batcher hand-off (beyond predict)"] = max(
            0.0, through_batcher - stages["estimator.predict, one row"])

        trips = {}
        for name, command in {
            "ml.serve (this project)": lambda port: [
                sys.executable, "-m", "ml.serve", "--model", ours_uri, "--host", "127.0.0.1", "--port", str(port)],
            "mlflow models serve": lambda port: [
                str(BIN / "mlflow"), "models", "serve", "-m", mlflow_uri, "--env-manager", "local",
                "-h", "127.0.0.1", "-p", str(port)],
        }.items():
            with running(command, work, env) as (url, _):
                trips[name] = round_trip_us(int(url.rsplit(":", 1)[1]), body, n)

    ours = trips["ml.serve (this project)"]
    stages["HTTP, ASGI, access log, loopback (the rest)"] = max(0.0, ours - sum(stages.values()))
    print(f"\nOne single-row request at a time, {n} requests, median microseconds "
          f"(HistGradientBoostingClassifier, 10 features)")
    print(f"{'stage':<46}{'us':>9}{'share':>8}")
    for name, us in sorted(stages.items(), key=lambda kv: -kv[1]):
        print(f"{name:<46}{us:>9.0f}{us / ours:>8.0%}")
    print(f"{'round trip, ml.serve (this project)':<46}{ours:>9.0f}{1:>8.0%}")
    print(f"{'round trip, mlflow models serve':<46}{trips['mlflow models serve']:>9.0f}"
          f"{trips['mlflow models serve'] / ours:>7.1f}x")
    out = REPO / "benchmarks" / "results"
    out.mkdir(exist_ok=True)
    (out / "serving_profile.json").write_text(json.dumps({"stages_us": stages, "round_trip_us": trips}, indent=2))


if __name__ == "__main__":
    main()
