"""ml_training_pipeline under a real Airflow: api-server, scheduler, dag-processor and triggerer
as separate processes (LocalExecutor) on a PostgreSQL metadata database, started by the same
launcher as `make airflow`. Runs come from the cron schedule, the REST API and
`airflow backfill create`; the source and the MLflow registry are PostgreSQL too.

The tests share one Airflow and run in file order (each builds on the registry the earlier
ones left): cron run -> REST run -> run without a logical date -> backfill -> clear -> SIGKILL.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections import defaultdict
from pathlib import Path

import psycopg2
import pytest

from demo.local_airflow import LocalAirflow
from ml import artifacts
from tests.integration.airflow_stack import running_airflow

DAG = "ml_training_pipeline"
MODEL = "rs_classifier"
ENDPOINT = "rs-endpoint"
DAYS = 5  # seeded days 0..4: 569 + 4 x 80 rows


@pytest.fixture(scope="module")
def airflow(make_database, tmp_path_factory):
    # deploys defer at once, so that the triggerer's DeployStatusTrigger is exercised even when
    # the local server would start within the task's own wait
    with running_airflow(make_database, tmp_path_factory.mktemp("real-airflow"), "mlp_af", days=DAYS, model=MODEL,
                         endpoint=ENDPOINT, extra_env={"ML_DEPLOY_WAIT_IN_TASK": "0"}) as stack:
        yield stack


def states_seen(af: LocalAirflow, run_id: str, timeout: float = 300) -> tuple[str, dict[str, set]]:
    seen: dict[str, set] = defaultdict(set)

    def record(tis):
        for task, ti in tis.items():
            seen[task].add(ti["state"])
            if ti["state"] == "deferred" and ti.get("trigger"):  # which trigger holds it, in the triggerer
                seen[task].add(ti["trigger"]["classpath"].rsplit(".", 1)[-1])

    return af.wait_for_run(DAG, run_id, timeout=timeout, poll=0.25, on_poll=record), seen


def runs(af: LocalAirflow) -> list[dict]:
    return af.api("GET", f"/api/v2/dags/{DAG}/dagRuns?order_by=run_after&limit=100")["dag_runs"]


def served(demo: Path) -> dict:
    from operators.deploy.targets.local import LocalServerTarget
    from operators.deploy.endpoint_client import ping

    return ping(LocalServerTarget(ENDPOINT, state_dir=str(demo / "endpoints" / ENDPOINT)).url) or {}


def model_versions(client) -> dict[str, str]:
    """digest -> version, asserting no digest is registered twice."""
    versions = client.search_model_versions(f"name = '{MODEL}'")
    digests = [v.tags["model_digest"] for v in versions]
    assert len(digests) == len(set(digests)), f"a model is registered twice: {digests}"
    return {v.tags["model_digest"]: str(v.version) for v in versions}


def test_the_cron_run_defers_its_sensors_and_deploy_to_the_triggerer_and_serves(airflow):
    af, demo = airflow["af"], airflow["demo"]
    af.api("PATCH", f"/api/v2/dags/{DAG}", {"is_paused": False})
    af.api("PATCH", "/api/v2/dags/ml_deploy", {"is_paused": False})
    deadline = time.monotonic() + 60
    while not (scheduled := [r for r in runs(af) if r["run_type"] == "scheduled"]) and time.monotonic() < deadline:
        time.sleep(0.5)
    (cron,) = scheduled
    state, seen = states_seen(af, cron["dag_run_id"])
    assert state == "success", seen
    for task, trigger in (("wait_for_snapshot", "ArtifactTrigger"), ("wait_for_model", "ArtifactTrigger"),
                          ("deploy", "DeployStatusTrigger")):
        assert {"deferred", trigger} <= seen[task], f"{task} never deferred to {trigger}: {seen[task]}"
    production = airflow["registry"].get_model_version_by_alias(MODEL, "production")
    assert served(demo)["model_version"] == str(production.version) == "1"


def test_a_rest_trigger_with_conf_trains_registers_and_the_endpoint_serves_production(airflow):
    af, demo, client = airflow["af"], airflow["demo"], airflow["registry"]
    # interval 2026-01-04 03:00 .. 01-05 03:00: days 0..3, so a model the registry has not seen
    run_id = af.trigger(DAG, {"estimator": "HistGradientBoostingClassifier", "hyperparameters": {"max_iter": 50}},
                        logical_date="2026-01-05T03:00:00+00:00")
    state, seen = states_seen(af, run_id)
    assert state == "success", seen
    snapshot = artifacts.open_verified(
        f"{demo}/artifacts/snapshots/{MODEL}/interval=20260104T030000Z--20260105T030000Z", kind="snapshot")
    assert snapshot.row_count == 569 + 3 * 80 and snapshot.lineage["run_id"] == run_id
    (version,) = [v for v in client.search_model_versions(f"name = '{MODEL}'") if v.tags["lineage.run_id"] == run_id]
    assert version.tags["snapshot_digest"] == snapshot.digest
    assert client.get_run(version.run_id).data.params["max_iter"] == "50"  # the conf reached the trainer
    decision = client.get_model_version(MODEL, version.version).tags["eval.decision"]
    production = client.get_model_version_by_alias(MODEL, "production")
    assert (str(production.version) == str(version.version)) == (decision == "promote")
    assert served(demo)["model_version"] == str(production.version)


def test_a_run_without_logical_date_extracts_up_to_run_after_into_its_own_partition(airflow):
    af, demo, client = airflow["af"], airflow["demo"], airflow["registry"]
    before = model_versions(client)
    run_id = af.trigger(DAG, {}, logical_date=None)
    state, seen = states_seen(af, run_id)
    assert state == "success", seen
    run = af.api("GET", f"/api/v2/dags/{DAG}/dagRuns/{run_id}")
    assert run["logical_date"] is None and run["data_interval_end"] is None
    partition = "run=" + "".join(c if c.isalnum() or c in "-_." else "_" for c in run_id)
    snapshot = artifacts.open_verified(f"{demo}/artifacts/snapshots/{MODEL}/{partition}", kind="snapshot")
    assert snapshot.row_count == 569 + (DAYS - 1) * 80  # every row before run_after
    assert snapshot.lineage["window_start"] is None
    assert snapshot.lineage["window_end"].replace("+00:00", "Z")[:19] == run["run_after"][:19]
    # The same rows as the cron run: the same model, so the registry returns the existing version.
    assert model_versions(client) == before


def test_backfill_three_intervals_then_clear_one(airflow):
    af, demo, client = airflow["af"], airflow["demo"], airflow["registry"]
    before = model_versions(client)
    proc = subprocess.run([af.airflow, "backfill", "create", "--dag-id", DAG, "--from-date", "2026-01-01T03:00:00+00:00",
                           "--to-date", "2026-01-03T03:00:00+00:00", "--dag-run-conf", '{"deploy": false}'],
                          env=af.env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    deadline = time.monotonic() + 60
    while len(backfill := [r for r in runs(af) if r["run_type"] == "backfill"]) < 3 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert len(backfill) == 3
    for run in backfill:
        assert af.wait_for_run(DAG, run["dag_run_id"], timeout=300) == "success"

    conn = psycopg2.connect(airflow["source"])
    digests = {}
    for day, run in enumerate(sorted(backfill, key=lambda r: r["data_interval_end"]), start=1):
        end = run["data_interval_end"]
        partition = f"interval={run['data_interval_start'][:19].replace('-', '').replace(':', '')}Z--" \
                    f"{end[:19].replace('-', '').replace(':', '')}Z"
        snapshot = artifacts.open_verified(f"{demo}/artifacts/snapshots/{MODEL}/{partition}", kind="snapshot")
        with conn.cursor() as cur:  # exactly the rows the interval's SQL selects
            cur.execute("SELECT count(*) FROM demo_training_rows WHERE event_time < %s", (end,))
            assert snapshot.row_count == cur.fetchone()[0] == 569 + (day - 1) * 80
        model = artifacts.open_verified(f"file://{demo}/artifacts/models/{MODEL}/{partition}", kind="model")
        assert model.lineage["snapshot_digest"] == snapshot.digest
        digests[run["dag_run_id"]] = (partition, snapshot.digest, model.digest)
    conn.close()
    after = model_versions(client)
    assert {d[2] for d in digests.values()} <= set(after) and len(after) == len(before) + 3
    # deploy=false: nothing is deployed, but the gate alone decides promotion.
    for run in backfill:
        tis = af.task_instances(DAG, run["dag_run_id"])
        version = after[digests[run["dag_run_id"]][2]]
        decision = client.get_model_version(MODEL, version).tags["eval.decision"]
        assert tis["deploy"]["state"] == "skipped"
        assert tis["promote"]["state"] == ("success" if decision == "promote" else "skipped"), (version, decision)

    # Clear one interval: it re-runs, replaces its snapshot with the same bytes, registers nothing.
    run_id, (partition, snapshot_digest, _) = next(iter(digests.items()))
    af.api("POST", f"/api/v2/dags/{DAG}/dagRuns/{run_id}/clear", {"dry_run": False})
    time.sleep(2)
    assert af.wait_for_run(DAG, run_id, timeout=300) == "success"
    assert af.task_instances(DAG, run_id)["extract"]["try_number"] >= 2
    again = artifacts.open_verified(f"{demo}/artifacts/snapshots/{MODEL}/{partition}", kind="snapshot")
    assert again.digest == snapshot_digest
    writes = [p for p in (demo / "artifacts" / "snapshots" / MODEL / partition).iterdir() if p.name.startswith("w-")]
    assert len(writes) == 1, writes
    assert model_versions(client) == after


def test_sigkill_of_the_train_task_process_the_retry_succeeds_and_no_reader_sees_a_partial_model(airflow):
    af, demo = airflow["af"], airflow["demo"]
    partition = "interval=20260105T030000Z--20260106T030000Z"
    model_uri = f"{demo}/artifacts/models/{MODEL}/{partition}"
    observations: list[str] = []
    stop = threading.Event()

    def reader():  # a reader polling the model: it sees nothing, or a complete verified artifact
        while not stop.is_set():
            if artifacts.manifest_exists(model_uri):
                try:
                    artifacts.open_verified(model_uri, kind="model")
                    observations.append("complete")
                except Exception as exc:  # noqa: BLE001 - recorded, asserted below
                    observations.append(f"broken: {exc!r}")
            time.sleep(0.01)

    watcher = threading.Thread(target=reader, daemon=True)
    watcher.start()
    run_id = af.trigger(DAG, {"deploy": False}, logical_date="2026-01-06T03:00:00+00:00")
    killed = None
    deadline = time.monotonic() + 240
    while killed is None and time.monotonic() < deadline:
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
                ppid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            if b"ml.train" in cmdline and model_uri.encode() in b" ".join(cmdline):
                os.kill(ppid, signal.SIGKILL)  # the task process running TrainModelOperator
                killed, trainer = ppid, int(pid)
                break
        time.sleep(0.02)
    assert killed, "the train task never started its trainer"
    gone = time.monotonic() + 10
    while Path(f"/proc/{trainer}").exists() and b"ml.train" in Path(f"/proc/{trainer}/cmdline").read_bytes() \
            and time.monotonic() < gone:
        time.sleep(0.05)
    assert not Path(f"/proc/{trainer}/cmdline").exists() or b"ml.train" not in Path(f"/proc/{trainer}/cmdline").read_bytes(), \
        "the killed task's trainer kept running beside the retry"
    try:
        state, seen = states_seen(af, run_id)
    finally:
        stop.set()
        watcher.join()
    assert state == "success", seen
    train = af.task_instances(DAG, run_id)["train"]
    assert train["try_number"] == 2 and train["state"] == "success"
    assert observations and all(o == "complete" for o in observations), set(observations)
    artifacts.open_verified(f"file://{model_uri}", kind="model")
