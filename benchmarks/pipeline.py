"""ml_training_pipeline under the real scheduler (`make airflow`'s launcher, LocalExecutor):
REST trigger -> new version serving, and the scheduling overhead, side by side with
`airflow dags test` of the same pipeline in the same run.

    .venv/bin/python benchmarks/pipeline.py [--trials 3] [--metadata sqlite|postgres]

Each trial trains a model of its own name (Param model_name), so its first version always
bootstraps `production` and is deployed: the clock runs from the REST POST until the endpoint's
/ping reports that model. Overhead = the gaps between one task ending and the next starting
along the run's critical path (every task that ran, in order), summed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from demo.local_airflow import LocalAirflow, free_port  # noqa: E402
from demo.seed_source import seed_sqlite  # noqa: E402
from operators.deploy.endpoint_client import ping  # noqa: E402

DAG = "ml_training_pipeline"


def _t(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def overhead(tis: dict[str, dict]) -> tuple[float, float]:
    """(summed gaps between consecutive tasks that ran, run span from first start to last end)."""
    ran = sorted((ti for ti in tis.values() if ti["state"] == "success" and ti["start_date"] and ti["end_date"]
                  and ti["end_date"] != ti["start_date"]), key=lambda ti: _t(ti["start_date"]))
    gaps, last_end = 0.0, None
    for ti in ran:
        start, end = _t(ti["start_date"]), _t(ti["end_date"])
        if last_end is not None and start > last_end:
            gaps += start - last_end
        last_end = end if last_end is None else max(last_end, end)
    return gaps, last_end - _t(ran[0]["start_date"])


def wait_serving(url_of, model: str, timeout: float = 300) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        url = url_of()
        answer = ping(url) if url else None
        if answer and f"/models/{model}/" in answer.get("source", ""):
            return time.monotonic()
        time.sleep(0.1)
    raise TimeoutError(f"{model} not served after {timeout}s")


def endpoint_url(demo: Path) -> str | None:
    state = demo / "endpoints" / "bench-local" / "state.json"
    return json.loads(state.read_text()).get("url") if state.exists() else None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--metadata", choices=["sqlite", "postgres"], default="sqlite",
                        help="Airflow's metadata database (postgres: the local server, as the tests use)")
    args = parser.parse_args()
    demo = Path(tempfile.mkdtemp(prefix="ml-bench-pipeline-"))
    demo.mkdir(exist_ok=True)
    seed_sqlite(demo / "source.db", days_at_least=2)
    metadata = None
    if args.metadata == "postgres":
        import psycopg2

        name = f"mlp_bench_{os.getpid()}"
        conn = psycopg2.connect("postgresql://root@127.0.0.1:5432/postgres")
        conn.autocommit = True
        conn.cursor().execute(f'CREATE DATABASE "{name}"')
        conn.close()
        metadata = f"postgresql+psycopg2://root@127.0.0.1:5432/{name}"
    os.environ["ML_ENDPOINT"] = "bench-local"
    af = LocalAirflow(demo, port=free_port(), metadata_uri=metadata,
                      extra_env={"AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True", "ML_ENDPOINT": "bench-local"})
    started = time.monotonic()
    af.start()
    print(f"components up in {time.monotonic() - started:.1f} s ({args.metadata} metadata, LocalExecutor)")
    rows = []
    try:
        af.api("PATCH", f"/api/v2/dags/{DAG}", {"is_paused": False})
        deadline = time.monotonic() + 60  # unpausing creates the cron run (the warm-up); wait for it to exist
        while not (runs := af.api("GET", f"/api/v2/dags/{DAG}/dagRuns")["dag_runs"]) and time.monotonic() < deadline:
            time.sleep(0.5)
        for run in runs:  # trials must not queue behind it (max_active_runs=1)
            af.wait_for_run(DAG, run["dag_run_id"], timeout=600)
        for trial in range(args.trials):
            model = f"bench_{trial}"
            posted = time.monotonic()
            run_id = af.trigger(DAG, {"model_name": model})
            serving = wait_serving(lambda: endpoint_url(demo), model) - posted
            state = af.wait_for_run(DAG, run_id, timeout=600)
            gaps, span = overhead(af.task_instances(DAG, run_id))
            rows.append({"how": "REST trigger, real scheduler", "trial": trial + 1, "serving_s": serving,
                         "overhead_s": gaps, "span_s": span, "state": state})
    finally:
        af.stop()
    # The alternative a user would otherwise pick: `airflow dags test` (one process, no scheduler).
    env = {**af.env, "AIRFLOW__CORE__EXECUTOR": "LocalExecutor"}
    posted = time.monotonic()
    proc = subprocess.Popen([af.airflow, "dags", "test", DAG, "--conf", json.dumps({"model_name": "bench_dags_test"})],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    serving = wait_serving(lambda: endpoint_url(demo), "bench_dags_test") - posted
    proc.wait(timeout=600)
    rows.append({"how": "`airflow dags test`", "trial": 1, "serving_s": serving, "overhead_s": float("nan"),
                 "span_s": time.monotonic() - posted, "state": "success" if proc.returncode == 0 else "failed"})
    from operators.deploy.targets.local import LocalServerTarget

    LocalServerTarget("bench-local", state_dir=str(demo / "endpoints" / "bench-local")).stop()

    print(f"\n{'how':<32} {'trial':>5} {'trigger->serving s':>19} {'overhead s':>11} {'run span s':>11} "
          f"{'overhead %':>11}  state")
    for r in rows:
        share = 100 * r["overhead_s"] / r["serving_s"] if r["overhead_s"] == r["overhead_s"] else float("nan")
        print(f"{r['how']:<32} {r['trial']:>5} {r['serving_s']:>19.1f} {r['overhead_s']:>11.1f} {r['span_s']:>11.1f} "
              f"{share:>11.1f}  {r['state']}")
    real = [r for r in rows if r["how"].startswith("REST")]
    serving = [r["serving_s"] for r in real]
    shares = [100 * r["overhead_s"] / r["serving_s"] for r in real]
    print(f"\nREST trigger -> serving: median {statistics.median(serving):.1f} s (min {min(serving):.1f}, "
          f"max {max(serving):.1f}); goal < 60 s")
    print(f"scheduling overhead: median {statistics.median(shares):.1f} % of it (min {min(shares):.1f}, "
          f"max {max(shares):.1f}); goal < 25 %")
    return 0 if all(r["state"] == "success" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
