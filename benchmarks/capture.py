"""What prediction capture costs a request: the same model served three times, capture off, of one
request in ten (rate 0.1) and of every request (rate 1, the demo's setting), driven in turn by
the same Locust load (tests/load: slo.toml's 8 users, closed loop, one request in ten a 32-row
batch: the server saturated, so any work capture adds shows in its latency). Goal: capture loses
no request (every request answered, every predicted row of the rate-1 server written) and adds
less than 10 % to p99.

    python benchmarks/capture.py [--seconds 20] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> int:
    from ml import train
    from ml.serving.capture import read_captured
    from tests.helpers import breast_cancer_table, write_snapshot
    from tests.load.locust_load import LocustLoad
    from tests.serving_helpers import ServerProcess, metric_value

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-capture-") as tmp:
        work = Path(tmp)
        table = breast_cancer_table()
        write_snapshot(str(work / "snapshot"), table)
        train.train(str(work / "snapshot"), str(work / "model"), train.parse_config(
            {"estimator": "HistGradientBoostingClassifier", "target": "target", "params": {"max_iter": 100}}))
        features = table.drop(["target"])
        columns, rows = features.column_names, [list(r.values()) for r in features.slice(0, 64).to_pylist()]
        captures = work / "captures"
        servers = {
            "capture off": ServerProcess("--model", str(work / "model"), "--name", "bc"),
            "capture 1 in 10": ServerProcess("--model", str(work / "model"), "--name", "bc",
                                             "--capture-rate", "0.1", "--capture-uri", str(work / "captures-0.1"),
                                             "--capture-flush-seconds", "1"),
            "capture every request": ServerProcess("--model", str(work / "model"), "--name", "bc",
                                                   "--capture-rate", "1", "--capture-uri", str(captures),
                                                   "--capture-flush-seconds", "1"),
        }
        results: dict[str, list[dict]] = {name: [] for name in servers}
        try:
            for r in range(args.rounds):
                for name, server in servers.items():
                    load = LocustLoad(server.url, columns, rows, work / f"locust-{r}-{len(results[name])}-{name[:3]}",
                                      seconds=args.seconds, max_requests=10**9)
                    report = load.start(wait_flowing=0).wait(timeout=args.seconds + 60)
                    results[name].append(report)
                    print(f"  round {r + 1} {name:<22} {report['requests'] / args.seconds:7.0f} req/s  "
                          f"p99 {report['p99_ms']:6.2f} ms  valid {report['valid']}/{report['requests']}", flush=True)
            capturing = servers["capture every request"]
            predicted = metric_value(capturing.url, "ml_serve_batch_rows_sum")
        finally:
            for server in servers.values():
                server.stop()  # the capturing server writes what it still holds
        written = read_captured(str(captures), "bc")
        written_rows = written.num_rows if written is not None else 0
        # the capturing server's counters were read before its last write: the files say what was written
    print()
    print(f"Locust, 8 users closed loop, {args.seconds:.0f} s a round, {args.rounds} rounds in turn")
    print(f"{'server':<24}{'req/s':>8}{'p50 ms':>9}{'p99 ms':>9}{'failed':>8}")
    p99 = {}
    for name, reports in results.items():
        p99[name] = statistics.median(r["p99_ms"] for r in reports)
        failed = sum(r["requests"] - r["valid"] for r in reports)
        print(f"{name:<24}{statistics.median(r['requests'] for r in reports) / args.seconds:8.0f}"
              f"{statistics.median(r['p50_ms'] for r in reports):9.2f}{p99[name]:9.2f}{failed:8d}")
    failed = sum(r["requests"] - r["valid"] for reports in results.values() for r in reports)
    checks = []
    for name in ("capture 1 in 10", "capture every request"):
        added = p99[name] / p99["capture off"] - 1
        checks.append((f"p99 {added:+.1%} with {name} (target < +10 %)", added < 0.10))
    checks += [(f"no failed request ({failed})", failed == 0),
              (f"every predicted row captured: {written_rows} written of {predicted:.0f}", written_rows == predicted)]
    for label, ok in checks:
        print(f"  [{'ok' if ok else 'MISSED'}] {label}")
    return 0 if all(ok for _, ok in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
