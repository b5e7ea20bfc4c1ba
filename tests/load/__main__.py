"""`make load-test`: the SLO report. Trains a model, serves it with ml.serve (default settings,
access log on), runs the Locust scenario at the load of slo.toml, prints the valid rate and
p50/p95/p99, and exits 0 when the SLO held, 1 when it did not (naming the breach).

    python -m tests.load [--seconds N] [--users N] [--max-requests N]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from tests.load.locust_load import SLO_FILE, LocustLoad, load_settings
from tests.load.slo import format_report


def serve_a_model(work: Path):
    """A HistGradientBoostingClassifier on the bundled breast-cancer data, served by a real ml.serve."""
    from ml import train
    from tests.helpers import breast_cancer_table, write_snapshot
    from tests.serving_helpers import ServerProcess

    table = breast_cancer_table()
    write_snapshot(str(work / "snapshot"), table)
    train.train(str(work / "snapshot"), str(work / "model"), train.parse_config(
        {"estimator": "HistGradientBoostingClassifier", "target": "target", "params": {"max_iter": 100}}))
    features = table.drop(["target"])
    return ServerProcess("--model", str(work / "model")), features.column_names, \
        [list(r.values()) for r in features.slice(0, 64).to_pylist()]


def main(argv: list[str] | None = None) -> int:
    settings = load_settings()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=settings["seconds"])
    parser.add_argument("--users", type=int, default=settings["users"])
    parser.add_argument("--max-requests", type=int, default=settings["max_requests"])
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="ml-load-") as tmp:
        work = Path(tmp)
        print("training and starting ml.serve ...", flush=True)
        server, columns, rows = serve_a_model(work)
        with server:
            print(f"Locust: {args.users} users, at most {args.seconds:.0f} s or {args.max_requests} requests, "
                  f"against {server.url} (SLO file {SLO_FILE})", flush=True)
            load = LocustLoad(server.url, columns, rows, work / "locust", users=args.users, seconds=args.seconds,
                              max_requests=args.max_requests)
            report = load.start(wait_flowing=0).wait(timeout=args.seconds + 60)
    print(format_report(report))
    return report["exit_code"]


if __name__ == "__main__":
    sys.exit(main())
