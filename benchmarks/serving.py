"""Serving benchmark: ml.serve vs `mlflow models serve` on the same model and the same load.

Trains a HistGradientBoostingClassifier on 10 generated features, serves it with this
project's server and with MLflow's scoring server (one process each, default settings,
this server with its JSON access log on), and drives both with wrk: single-row JSON
requests over 8 concurrent connections. Prints throughput and p50/p99 side by side.

Needs wrk (Debian/Ubuntu: apt-get install wrk).   python benchmarks/serving.py [--seconds 10]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url: str, proc: subprocess.Popen, log: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{url} exited early:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url + "/ping", timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"{url} not ready after {timeout}s")


def build_models(work: Path) -> tuple[str, str, list[float]]:
    import mlflow.sklearn
    import pyarrow as pa
    from sklearn.datasets import make_classification

    from ml import artifacts, model_io, train
    from ml.snapshots import arrow_schema_fields

    X, y = make_classification(n_samples=20_000, n_features=10, n_informative=6, random_state=0)
    table = pa.table({**{f"f{i}": X[:, i] for i in range(10)}, "target": y})
    writer = artifacts.ArtifactWriter(str(work / "snapshot"), "snapshot")
    import pyarrow.parquet as pq

    with writer.open("part-00000.parquet") as f:
        pq.write_table(table, f)
    writer.commit(schema=arrow_schema_fields(table.schema), row_count=table.num_rows, lineage={"benchmark": "serving"})
    config = train.parse_config({"estimator": "HistGradientBoostingClassifier", "target": "target",
                                 "params": {"max_iter": 100}})
    train.train(str(work / "snapshot"), str(work / "model"), config)
    manifest = artifacts.open_verified(str(work / "model"))
    with artifacts.open_file(manifest, manifest.file("model.skops")) as f:
        estimator = model_io.loads(f.read())
    mlflow.sklearn.save_model(estimator, str(work / "mlflow-model"), serialization_format="skops",
                              skops_trusted_types=model_io.TRUSTED_TYPES)
    return str(work / "model"), str(work / "mlflow-model"), [round(float(v), 6) for v in X[0]]


def wrk(url: str, body: str, seconds: int, connections: int = 8) -> dict:
    script = Path(tempfile.mkstemp(suffix=".lua")[1])
    script.write_text(f'wrk.method = "POST"\nwrk.body = {json.dumps(body)}\n'
                      'wrk.headers["Content-Type"] = "application/json"\n')
    out = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script),
                          url + "/invocations"], capture_output=True, text=True, check=True).stdout
    script.unlink()

    def ms(label: str) -> float:
        value, unit = re.search(rf"^\s+{label}\s+([\d.]+)(us|ms|s)\s*$", out, re.M).groups()
        return float(value) * {"us": 0.001, "ms": 1, "s": 1000}[unit]

    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: (.*)", out)
    return {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)), "p50_ms": ms("50%"),
            "p99_ms": ms("99%"), "non_2xx": int(errors.group(1)) if errors else 0,
            "socket_errors": socket_errors.group(1) if socket_errors else ""}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10)
    args = parser.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is not installed: apt-get install wrk (it drives both servers with the same load)")
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "PYTHONPATH": str(REPO)}
    procs = []
    with tempfile.TemporaryDirectory(prefix="bench-serving-") as tmp:
        work = Path(tmp)
        ours_uri, mlflow_uri, row = build_models(work)
        body = json.dumps({"inputs": [row]})  # a payload both servers accept
        servers = {  # name -> command for a port
            "ml.serve (this project)": lambda port: [
                sys.executable, "-m", "ml.serve", "--model", ours_uri, "--host", "127.0.0.1", "--port", str(port)],
            "mlflow models serve": lambda port: [
                str(BIN / "mlflow"), "models", "serve", "-m", mlflow_uri, "--env-manager", "local",
                "-h", "127.0.0.1", "-p", str(port)],
        }
        results = {}
        try:
            for name, command in servers.items():
                port = free_port()
                log = work / f"{port}.log"
                proc = subprocess.Popen(command(port), stdout=open(log, "wb"), stderr=subprocess.STDOUT, env=env,
                                        cwd=REPO, start_new_session=True)
                procs.append(proc)
                url = f"http://127.0.0.1:{port}"
                wait_ready(url, proc, log)
                wrk(url, body, 2)  # warm-up
                results[name] = wrk(url, body, args.seconds)
                print(f"  {name:<26} {results[name]['rps']:8.0f} req/s", flush=True)
                os.killpg(proc.pid, 15)
                proc.wait(timeout=30)
        finally:
            for proc in procs:
                if proc.poll() is None:
                    os.killpg(proc.pid, 9)
    ours, theirs = results["ml.serve (this project)"], results["mlflow models serve"]
    print(f"\nHistGradientBoostingClassifier, 10 features; single-row JSON, 8 connections, {args.seconds} s, wrk -t1")
    print(f"{'server':<28}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'non-2xx':>9}")
    for name, r in results.items():
        print(f"{name:<28}{r['rps']:>10.0f}{r['p50_ms']:>9.2f}{r['p99_ms']:>9.2f}{r['non_2xx']:>9}")
    ratio = ours["rps"] / theirs["rps"]
    checks = [(f"throughput {ratio:.1f}x MLflow's (target >= 10x)", ratio >= 10),
              (f"p99 {ours['p99_ms']:.2f} ms (target < 10 ms)", ours["p99_ms"] < 10),
              ("no failed requests", ours["non_2xx"] == 0 and not ours["socket_errors"])]
    for text, ok in checks:
        print(f"  [{'ok' if ok else 'MISS'}] {text}")
    out = REPO / "benchmarks" / "results"
    out.mkdir(exist_ok=True)
    (out / "serving.json").write_text(json.dumps(results, indent=2))
    sys.exit(0 if all(ok for _, ok in checks) else 1)


if __name__ == "__main__":
    main()
