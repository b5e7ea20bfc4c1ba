"""Serving benchmark: ml.serve vs `mlflow models serve`, KServe and MLServer, on the same
model and the same load.

Numeric: trains a HistGradientBoostingClassifier on 10 generated features and serves the same
fitted estimator with this project's server, MLflow's scoring server, a `kserve.Model` on KServe
0.21's ModelServer and MLServer 1.7.1's scikit-learn runtime (one process each, default
settings, this server with its JSON access log on). ``--compare-with REV`` also serves it with
this project's code at git revision REV (a worktree in the temporary folder, its own trainer's
model): the same model through the code before a change, in the same run; the two servers run
at once and are driven in turn (``--rounds``, median), so the machine's drift falls on both.

Text: trains the built-in ``text`` model on generated moderation posts and fits the same
scikit-learn pipeline (hashed word and character n-grams, TF-IDF, logistic regression) for
`mlflow models serve`, its default flavour; single-text requests.

wrk drives each in turn with single-row JSON requests (each server's own protocol) over 8
concurrent connections. Prints throughput and p50/p99 side by side.

KServe and MLServer run from virtualenvs of their own (benchmarks/alternatives/*.lock, made
in .cache/bench-venvs/ on first use with uv, as `make venv` makes the project's): their pins
conflict with Airflow's. `--only ml.serve,mlflow` skips some.

Needs wrk (Debian/Ubuntu: apt-get install wrk).   python benchmarks/serving.py [--seconds 10]
"""

from __future__ import annotations

import argparse
import contextlib
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


def wait_ready(url: str, proc: subprocess.Popen, log: Path, timeout: float = 120, health: str = "/ping") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{url} exited early:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url + health, timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"{url} not ready after {timeout}s")


@contextlib.contextmanager
def running(command, work: Path, env: dict, health: str = "/ping"):
    """``command(port)`` started on a free port in a session of its own; yields its URL and log
    once ``health`` answers 200; stopped afterwards (SIGTERM, then SIGKILL after 30 s: MLServer's
    inference pool outlives a SIGTERM)."""
    port = free_port()
    log = work / f"{port}.log"
    proc = subprocess.Popen(command(port), stdout=open(log, "wb"), stderr=subprocess.STDOUT, env=env, cwd=work,
                            start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_ready(url, proc, log, health=health)
        yield url, log
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 15)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, 9)
                proc.wait(timeout=30)


def alternative_python(name: str) -> Path:
    """The interpreter of baseline ``name``'s own virtualenv, made from its lock when missing."""
    venv = REPO / ".cache" / "bench-venvs" / name
    python = venv / "bin" / "python"
    marker = venv / ".synced"
    lock = REPO / "benchmarks" / "alternatives" / f"{name}.lock"
    if not marker.exists() or marker.stat().st_mtime < lock.stat().st_mtime:
        uv = REPO / ".tools" / "bin" / "uv"
        if not uv.exists():
            raise SystemExit("uv is missing: run `make venv` first (it installs .tools/bin/uv)")
        env = {**os.environ, "UV_CACHE_DIR": str(REPO / ".cache" / "uv")}
        print(f"  making the {name} virtualenv from {lock.relative_to(REPO)} ...", flush=True)
        subprocess.run([str(uv), "venv", "--quiet", "--allow-existing", "--python", "python3.11", str(venv)],
                       check=True, env=env)
        subprocess.run([str(uv), "pip", "sync", "--quiet", "--python", str(python), str(lock)], check=True, env=env)
        marker.touch()
    return python


def mlserver_folder(work: Path, joblib_file: Path, port: int, grpc_port: int | None = None) -> Path:
    """MLServer's settings: the sklearn runtime on ``joblib_file``; HTTP on ``port``, gRPC on
    ``grpc_port`` (else a free one) and metrics on a free one (its defaults otherwise)."""
    folder = work / "mlserver"
    (folder / "hgb").mkdir(parents=True, exist_ok=True)
    (folder / "settings.json").write_text(json.dumps(
        {"http_port": port, "grpc_port": grpc_port or free_port(), "metrics_port": free_port(), "host": "127.0.0.1"}))
    (folder / "hgb" / "model-settings.json").write_text(json.dumps(
        {"name": "hgb", "implementation": "mlserver_sklearn.SKLearnModel", "parameters": {"uri": str(joblib_file)}}))
    return folder


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
    with artifacts.open_file(manifest, manifest.file("model/model.skops")) as f:
        estimator = model_io.loads(f.read())
    mlflow.sklearn.save_model(estimator, str(work / "mlflow-model"), serialization_format="skops",
                              skops_trusted_types=model_io.TRUSTED_TYPES)
    (work / "estimator.skops").write_bytes(model_io.dumps(estimator))  # KServe's copy
    import joblib

    joblib.dump(estimator, work / "model.joblib")  # MLServer's sklearn runtime reads joblib only
    return str(work / "model"), str(work / "mlflow-model"), [round(float(v), 6) for v in X[0]]


def build_text_models(work: Path) -> tuple[str, str, dict]:
    """Our ``text`` model and, for MLflow, the same scikit-learn pipeline fitted on the same rows."""
    import mlflow.sklearn
    import numpy as np
    import pyarrow.parquet as pq
    from sklearn.compose import ColumnTransformer
    from sklearn.feature_extraction.text import HashingVectorizer, TfidfTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline

    from demo.moderation_posts import table as posts_table
    from ml import artifacts, train

    table = posts_table(20_000, seed=11).select(["text", "label"])
    snapshot = work / "text-snapshot"
    writer = artifacts.ArtifactWriter(str(snapshot), "snapshot")
    with writer.open("part-00000.parquet") as f:
        pq.write_table(table, f)
    from ml.snapshots import arrow_schema_fields

    writer.commit(schema=arrow_schema_fields(table.schema), row_count=table.num_rows, lineage={"benchmark": "text"})
    config = train.parse_config({"model": "text", "target": "label", "params": {"C": 5.0}})
    train.train(str(snapshot), str(work / "text-model"), config)
    model = config.build()
    settings = model.settings
    common = {"n_features": 1 << settings["hash_bits"], "alternate_sign": False, "norm": None, "lowercase": True}
    pipeline = Pipeline([
        ("features", ColumnTransformer([
            ("word", HashingVectorizer(analyzer="word", ngram_range=tuple(settings["word_ngrams"]),
                                       token_pattern=r"(?u)\b\w+\b", **common), "text"),
            ("char", HashingVectorizer(analyzer="char_wb", ngram_range=tuple(settings["char_ngrams"]), **common),
             "text")])),
        ("tfidf", TfidfTransformer(sublinear_tf=True)),
        ("model", LogisticRegression(C=settings["C"], max_iter=settings["max_iter"], random_state=settings["seed"])),
    ])
    frame = table.to_pandas()
    pipeline.fit(frame[["text"]], np.asarray(frame["label"]))
    mlflow.sklearn.save_model(pipeline, str(work / "mlflow-text-model"))  # MLflow's default flavour
    return str(work / "text-model"), str(work / "mlflow-text-model"), {"text": "buy cheap followers today, lol"}


def before_checkout(rev: str, work: Path) -> Path:
    """A worktree of this repository at ``rev`` (removed with the temporary folder's worktree list)."""
    path = work / f"before-{rev}"
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", "--quiet", str(path), rev], check=True)
    return path


def wrk(url: str, body: str, seconds: int, connections: int = 8, path: str = "/invocations") -> dict:
    script = Path(tempfile.mkstemp(suffix=".lua")[1])
    script.write_text(f'wrk.method = "POST"\nwrk.body = {json.dumps(body)}\n'
                      'wrk.headers["Content-Type"] = "application/json"\n')
    out = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script),
                          url + path], capture_output=True, text=True, check=True).stdout
    script.unlink()

    def ms(label: str) -> float:
        value, unit = re.search(rf"^\s+{label}\s+([\d.]+)(us|ms|s)\s*$", out, re.M).groups()
        return float(value) * {"us": 0.001, "ms": 1, "s": 1000}[unit]

    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: (.*)", out)
    return {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)), "p50_ms": ms("50%"),
            "p99_ms": ms("99%"), "non_2xx": int(errors.group(1)) if errors else 0,
            "socket_errors": socket_errors.group(1) if socket_errors else ""}


def measure(servers: dict, work: Path, env: dict, seconds: int, only: set[str]) -> dict:
    results = {}
    for name, (key, command, health, path, body, server_env) in servers.items():
        if key not in only:
            continue
        with running(command, work, server_env or env, health) as (url, log):
            check = wrk(url, body, 1, path=path)  # warm-up, and every server must answer 2xx
            if check["non_2xx"] or check["socket_errors"]:
                raise SystemExit(f"{name} did not answer the benchmark's request:\n{log.read_text()[-3000:]}")
            results[name] = wrk(url, body, seconds, path=path)
        print(f"  {name:<34} {results[name]['rps']:8.0f} req/s", flush=True)
    return results


def alternating(servers: dict, work: Path, env: dict, seconds: int, rounds: int) -> dict:
    """The servers started together, then driven in turn, ``rounds`` times each (A B A B ...): a
    machine's drift over the run falls on both alike. Each gets the run with its median req/s."""
    runs: dict[str, list[dict]] = {name: [] for name in servers}
    with contextlib.ExitStack() as stack:
        urls = {}
        for name, (_, command, health, path, body, server_env) in servers.items():
            url, log = stack.enter_context(running(command, work, server_env or env, health))
            check = wrk(url, body, 1, path=path)
            if check["non_2xx"] or check["socket_errors"]:
                raise SystemExit(f"{name} did not answer the benchmark's request:\n{log.read_text()[-3000:]}")
            urls[name] = (url, path, body)
        for _ in range(rounds):
            for name, (url, path, body) in urls.items():
                runs[name].append(wrk(url, body, seconds, path=path))
    results = {}
    for name, measured in runs.items():
        ordered = sorted(measured, key=lambda r: r["rps"])
        results[name] = {**ordered[len(ordered) // 2], "rounds": [round(r["rps"]) for r in measured]}
        print(f"  {name:<34} {results[name]['rps']:8.0f} req/s (median of {results[name]['rounds']})", flush=True)
    return results


def table(title: str, results: dict, ours_name: str) -> None:
    print(f"\n{title}")
    print(f"{'server':<36}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'non-2xx':>9}{'ml.serve is':>13}")
    ours = results.get(ours_name)
    for name, r in results.items():
        ratio = f"{ours['rps'] / r['rps']:.2f}x" if ours else ""
        print(f"{name:<36}{r['rps']:>10.0f}{r['p50_ms']:>9.2f}{r['p99_ms']:>9.2f}{r['non_2xx']:>9}{ratio:>13}")


def protocol_section(work: Path, env: dict, seconds: int, only: set[str], row: list[float], rounds: int = 3) -> dict:
    """The Open Inference Protocol: each server's REST infer (wrk, JSON) and gRPC infer (h2load), single-row
    requests (``row``) for the same fitted estimator (``build_models``), 8 at a time; every server serving both
    from one process. The servers run together and are driven in turn, ``rounds`` times each per protocol;
    each gets its round with the median req/s."""
    from benchmarks import open_inference_load as oip
    from ml import model_io

    names = [f"f{i}" for i in range(len(row))]
    ports: dict[str, int] = {}

    def grpc_port(key: str) -> int:
        ports[key] = free_port()
        return ports[key]

    servers = {  # key -> (label, command for a port, health, request)
        "ml.serve": ("ml.serve (this project)", lambda port: [
            sys.executable, "-m", "ml.serve", "--model", str(work / "model"), "--name", "hgb", "--host", "127.0.0.1",
            "--port", str(port), "--grpc-port", str(grpc_port("ml.serve"))], "/v2/health/ready",
            oip.per_feature_request("hgb", names, row)),
        "kserve": ("KServe 0.21 (kserve.Model)", lambda port: [
            str(alternative_python("kserve")), str(REPO / "benchmarks" / "alternatives" / "kserve_server.py"),
            "--estimator-file", str(work / "estimator.skops"), "--trusted", json.dumps(model_io.TRUSTED_TYPES),
            "--port", str(port), "--grpc-port", str(grpc_port("kserve"))], "/v2/models/hgb/ready",
            oip.matrix_request("hgb", "input-0", row)),
        "mlserver": ("MLServer 1.7.1 (sklearn)", lambda port: [
            str(alternative_python("mlserver").parent / "mlserver"), "start",
            str(mlserver_folder(work, work / "model.joblib", port, grpc_port("mlserver")))], "/v2/models/hgb/ready",
            oip.matrix_request("hgb", "predict", row)),
    }
    print("the Open Inference Protocol, REST and gRPC:", flush=True)
    runs: dict[str, list[dict]] = {}
    with contextlib.ExitStack() as stack:
        started = {}  # every server at once, then driven in turn: the machine's drift falls on all alike
        for key, (label, command, health, request) in servers.items():
            if key not in only:
                continue
            message = oip.grpc_message(request)
            url, log = stack.enter_context(running(command, work, env, health))
            body = oip.rest_body(request)
            check = wrk(url, body, 1, path="/v2/models/hgb/infer")
            if check["non_2xx"] or check["socket_errors"]:
                raise SystemExit(f"{label} did not answer the REST infer:\n{log.read_text()[-3000:]}")
            address = f"127.0.0.1:{ports[key]}"
            oip.grpc_check(address, message)
            oip.h2load(address, message, 1)  # warm-up
            started[key] = (label, url, body, address, message)
        for _ in range(rounds):
            for key, (label, url, body, address, message) in started.items():
                runs.setdefault(f"{label}, REST", []).append(wrk(url, body, seconds, path="/v2/models/hgb/infer"))
            for key, (label, url, body, address, message) in started.items():
                runs.setdefault(f"{label}, gRPC", []).append(oip.h2load(address, message, seconds))
        for key, (label, url, body, address, message) in started.items():
            oip.grpc_check(address, message)  # still answering after the load
            if key == "ml.serve" and (errors := oip.ml_serve_grpc_errors(url)):
                runs[f"{label}, gRPC"][-1]["non_2xx"] += errors
    results: dict = {}
    for name, measured in runs.items():  # the round with the median req/s, failures of every round
        ordered = sorted(measured, key=lambda r: r["rps"])
        results[name] = {**ordered[len(ordered) // 2], "rounds": [round(r["rps"]) for r in measured],
                         "non_2xx": sum(r["non_2xx"] for r in measured),
                         "socket_errors": " ".join(str(r["socket_errors"]) for r in measured if r["socket_errors"])}
        print(f"  {name:<40} {results[name]['rps']:8.0f} req/s (median of {results[name]['rounds']})", flush=True)
    return results


def protocol_checks(results: dict, seconds: int) -> list[tuple[str, bool]]:
    checks = []
    for transport in ("REST", "gRPC"):
        rows = {k: v for k, v in results.items() if k.endswith(f", {transport}")}
        table(f"the Open Inference Protocol over {transport}: single-row infer, 8 at a time, {seconds} s rounds, median "
              f"({'wrk, JSON' if transport == 'REST' else 'h2load, protobuf'})", rows, f"ml.serve (this project), {transport}")
        ours = rows.get(f"ml.serve (this project), {transport}")
        if not ours:
            continue
        checks.append((f"{transport}: no failed requests", ours["non_2xx"] == 0 and not ours["socket_errors"]))
        for name, theirs in rows.items():
            if theirs is ours:
                continue
            ratio = ours["rps"] / theirs["rps"]
            checks.append((f"{transport}: {ratio:.1f}x {name.rsplit(',', 1)[0]}'s throughput (target >= 5x), p99 "
                           f"{ours['p99_ms']:.2f} ms against {theirs['p99_ms']:.2f} ms (target lower)",
                           ratio >= 5 and ours["p99_ms"] < theirs["p99_ms"]))
    return checks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--only", default="ml.serve,mlflow,kserve,mlserver,before",
                        help="comma-separated subset of ml.serve, mlflow, kserve, mlserver, before")
    parser.add_argument("--models", default="numeric,text,protocol",
                        help="numeric, text, protocol (the Open Inference Protocol over REST and gRPC: ml.serve, "
                             "KServe, MLServer), comma-separated")
    parser.add_argument("--compare-with", metavar="REV",
                        help="also serve the numeric model with this project's code at git revision REV")
    parser.add_argument("--rounds", type=int, default=5,
                        help="with --compare-with: both served at once and driven in turn this many times")
    args = parser.parse_args()
    only, models = set(args.only.split(",")), set(args.models.split(","))
    if not shutil.which("wrk"):
        raise SystemExit("wrk is not installed: apt-get install wrk (it drives every server with the same load)")
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "PYTHONPATH": str(REPO)}
    results, checks = {}, []
    with tempfile.TemporaryDirectory(prefix="bench-serving-") as tmp:
        work = Path(tmp)
        from ml import model_io

        ml_serve = lambda uri: lambda port: [sys.executable, "-m", "ml.serve", "--model", uri, "--host", "127.0.0.1",
                                             "--port", str(port)]
        mlflow_serve = lambda uri: lambda port: [str(BIN / "mlflow"), "models", "serve", "-m", uri, "--env-manager",
                                                 "local", "-h", "127.0.0.1", "-p", str(port)]
        if models & {"numeric", "protocol"}:  # one fitted estimator for both sections
            ours_uri, mlflow_uri, row = build_models(work)
        if "numeric" in models:
            # name -> (key, command for a port, health, predict path, body, env): one row, each server's protocol
            mlflow_body = json.dumps({"inputs": [row]})
            servers = {"ml.serve (this project)": ("ml.serve", ml_serve(ours_uri), "/ping", "/invocations",
                                                   mlflow_body, None)}
            if args.compare_with:
                before = before_checkout(args.compare_with, work)
                before_env = {**env, "PYTHONPATH": str(before)}
                subprocess.run([sys.executable, "-m", "ml.train", "--data", str(work / "snapshot"), "--output",
                                str(work / "model-before"), "--config", json.dumps(
                                    {"estimator": "HistGradientBoostingClassifier", "target": "target",
                                     "params": {"max_iter": 100}})], env=before_env, cwd=before, check=True,
                               capture_output=True)
                servers[f"ml.serve at {args.compare_with}"] = ("before", ml_serve(str(work / "model-before")),
                                                               "/ping", "/invocations", mlflow_body, before_env)
            servers.update({
                "mlflow models serve": ("mlflow", mlflow_serve(mlflow_uri), "/ping", "/invocations", mlflow_body,
                                        None),
                "KServe 0.21 (kserve.Model)": ("kserve", lambda port: [
                    str(alternative_python("kserve")), str(REPO / "benchmarks" / "alternatives" / "kserve_server.py"),
                    "--estimator-file", str(work / "estimator.skops"), "--trusted",
                    json.dumps(model_io.TRUSTED_TYPES), "--port", str(port)], "/v1/models/hgb",
                    "/v1/models/hgb:predict", json.dumps({"instances": [row]}), None),
                "MLServer 1.7.1 (sklearn)": ("mlserver", lambda port: [
                    str(alternative_python("mlserver").parent / "mlserver"), "start",
                    str(mlserver_folder(work, work / "model.joblib", port))], "/v2/models/hgb/ready",
                    "/v2/models/hgb/infer", json.dumps({"inputs": [{"name": "predict", "shape": [1, len(row)],
                                                                     "datatype": "FP64", "data": [row]}]}), None),
            })
            print("numeric model:", flush=True)
            pair = {k: v for k, v in servers.items() if v[0] in ("ml.serve", "before")} if args.compare_with else {}
            numeric = alternating(pair, work, env, args.seconds, args.rounds) if pair else {}
            numeric.update(measure({k: v for k, v in servers.items() if k not in pair}, work, env, args.seconds,
                                   only))
            results["numeric"] = numeric
        if "text" in models:
            ours_text, mlflow_text, record = build_text_models(work)
            body = json.dumps({"dataframe_records": [record]}, ensure_ascii=False)  # both servers' protocol
            servers = {"ml.serve (this project), text": ("ml.serve", ml_serve(ours_text), "/ping", "/invocations",
                                                         body, None),
                       "mlflow models serve, text": ("mlflow", mlflow_serve(mlflow_text), "/ping", "/invocations",
                                                     body, None)}
            print("text model:", flush=True)
            results["text"] = measure(servers, work, env, args.seconds, only)
        if "protocol" in models:
            results["protocol"] = protocol_section(work, env, args.seconds, only, row, args.rounds)
        if args.compare_with:
            subprocess.run(["git", "-C", str(REPO), "worktree", "prune"], check=False)
    if "numeric" in results:
        table(f"HistGradientBoostingClassifier, 100 trees, 10 features; single-row JSON, 8 connections, "
              f"{args.seconds} s, wrk -t1", results["numeric"], "ml.serve (this project)")
        ours = results["numeric"].get("ml.serve (this project)")
        if ours:
            checks += [(f"p99 {ours['p99_ms']:.2f} ms (target < 8 ms)", ours["p99_ms"] < 8),
                       ("no failed requests", ours["non_2xx"] == 0 and not ours["socket_errors"])]
            if theirs := results["numeric"].get("mlflow models serve"):
                ratio = ours["rps"] / theirs["rps"]
                checks.insert(0, (f"throughput {ratio:.1f}x MLflow's (target >= 12x)", ratio >= 12))
            if before := results["numeric"].get(f"ml.serve at {args.compare_with}"):
                change = ours["rps"] / before["rps"] - 1
                checks.append((f"throughput {change:+.1%} against {args.compare_with} (target within 5 %)",
                               change >= -0.05))
    if "text" in results:
        table(f"text model (hashed word 1-2 and char 2-4 grams, TF-IDF, logistic regression); single-text JSON, "
              f"8 connections, {args.seconds} s", results["text"], "ml.serve (this project), text")
        ours, theirs = (results["text"].get(k) for k in ("ml.serve (this project), text", "mlflow models serve, text"))
        if ours and theirs:
            ratio = ours["rps"] / theirs["rps"]
            checks += [(f"text throughput {ratio:.1f}x MLflow's (target >= 10x)", ratio >= 10),
                       (f"text p99 {ours['p99_ms']:.2f} ms against MLflow's {theirs['p99_ms']:.2f} ms (target lower)",
                        ours["p99_ms"] < theirs["p99_ms"]),
                       ("no failed text requests", ours["non_2xx"] == 0 and not ours["socket_errors"])]
    if "protocol" in results:
        checks += protocol_checks(results["protocol"], args.seconds)
    for text, ok in checks:
        print(f"  [{'ok' if ok else 'MISS'}] {text}")
    out = REPO / "benchmarks" / "results"
    out.mkdir(exist_ok=True)
    (out / "serving.json").write_text(json.dumps(results, indent=2))
    sys.exit(0 if all(ok for _, ok in checks) else 1)


if __name__ == "__main__":
    main()
