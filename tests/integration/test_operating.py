"""Operating the pipelines under a real Airflow (api-server, scheduler, dag-processor, triggerer;
PostgreSQL metadata, source and registry): Slack alerts to a local webhook receiver, the
models-and-endpoints page in headless Chromium (Debian's, driven by Playwright), its rollback
button and auth, a week's backfill of ml_batch_scoring, and retraining on a published snapshot.

The tests share one Airflow and run in file order: two trained versions and three deploys
first, then the page, then scoring and retraining on what the registry holds.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import psycopg2
import pytest

from demo.local_airflow import AirflowApiError, AirflowRest, LocalAirflow
from ml import artifacts
from tests.integration.airflow_stack import running_airflow

MODEL = "op_classifier"
ENDPOINT = "op-endpoint"
DAYS = 8  # seeded days 0..7: the backfill's seven intervals each hold rows
SHOTS = Path(os.environ.get("ML_TEST_OUTPUT", Path(__file__).resolve().parents[2] / "test-output"))
CHROMIUM = "/usr/bin/chromium"


class SlackReceiver(ThreadingHTTPServer):
    """Stands in for Slack's incoming webhook: records every message, answers "ok" as Slack does."""

    def __init__(self):
        self.messages: list[dict] = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(handler):  # noqa: N805
                body = handler.rfile.read(int(handler.headers["Content-Length"]))
                self.messages.append({"path": handler.path, **json.loads(body)})
                handler.send_response(200)
                handler.send_header("Content-Type", "text/plain")
                handler.end_headers()
                handler.wfile.write(b"ok")

            def log_message(handler, *args):  # noqa: N805
                pass

        super().__init__(("127.0.0.1", 0), Handler)

    def texts(self, containing: str = "") -> list[str]:
        return [m["text"] for m in self.messages if containing in m.get("text", "")]

    def wait_for(self, containing: str, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if found := self.texts(containing):
                return found[-1]
            time.sleep(0.2)
        raise AssertionError(f"no Slack message containing {containing!r}; got {self.texts()}")


@pytest.fixture(scope="module")
def slack():
    server = SlackReceiver()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()


# Planted in the connections (the source's and the registry's database passwords, the Slack
# webhook's token); the last test looks for them everywhere the pipelines leave traces.
PLANTED = {"database password": f"planted-db-{uuid.uuid4().hex[:10]}",
           "slack token": f"planted-hook-{uuid.uuid4().hex[:10]}"}


@pytest.fixture(scope="module")
def airflow(make_database, tmp_path_factory, slack):
    webhook = f"http://127.0.0.1:{slack.server_address[1]}/services/T000/B000/{PLANTED['slack token']}"
    with running_airflow(make_database, tmp_path_factory.mktemp("operating"), "mlp_op", days=DAYS, model=MODEL,
                         endpoint=ENDPOINT, password=PLANTED["database password"], extra_env={
                             "AIRFLOW_CONN_ML_SLACK": json.dumps({"conn_type": "slackwebhook", "password": webhook}),
                             "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin,viewer:viewer"}) as stack:
        yield stack


def run_ok(af: AirflowRest, dag_id: str, conf: dict, timeout: float = 300) -> str:
    run_id = af.trigger(dag_id, conf)
    state = af.wait_for_run(dag_id, run_id, timeout=timeout)
    assert state == "success", {t: ti["state"] for t, ti in af.task_instances(dag_id, run_id).items()}
    return run_id


def passwords(af: LocalAirflow) -> dict[str, str]:
    return json.loads(af._passwords.read_text())


def test_two_versions_deploys_and_their_slack_alerts(airflow, slack):
    af, client = airflow["af"], airflow["registry"]
    af.api("PATCH", "/api/v2/dags/ml_deploy", {"is_paused": False})
    af.api("PATCH", "/api/v2/dags/ml_training_pipeline", {"is_paused": False})  # its latest cron interval runs
    deadline = time.monotonic() + 60
    while not (cron := [r for r in af.api("GET", "/api/v2/dags/ml_training_pipeline/dagRuns")["dag_runs"]
                        if r["run_type"] == "scheduled"]) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert af.wait_for_run("ml_training_pipeline", cron[0]["dag_run_id"], timeout=300) == "success"
    run_ok(af, "ml_training_pipeline", {"deploy": False, "seed": 7})
    versions = sorted(int(v.version) for v in client.search_model_versions(f"name = '{MODEL}'"))
    assert versions == [1, 2]
    first = slack.wait_for("version 1 serves")
    assert f"*{MODEL}* version 1 serves on endpoint `{ENDPOINT}` (before: nothing" in first
    run_ok(af, "ml_deploy", {"model": MODEL, "version": "2"})
    text = slack.wait_for("version 2 serves")
    accuracy = {v: client.get_run(client.get_model_version(MODEL, v).run_id).data.metrics["accuracy"] for v in "12"}
    assert f"accuracy {accuracy['2']:.4f} ({accuracy['2'] - accuracy['1']:+.4f} vs v1)" in text
    assert "(before: 1;" in text

    # A failing task: the notifier in default_args reports DAG, task, try, error and the log's URL.
    run_id = af.trigger("ml_deploy", {"model": MODEL, "version": "999"})
    assert af.wait_for_run("ml_deploy", run_id, timeout=120) == "failed"
    alert = slack.wait_for("task `deploy` failed")
    assert "*ml_deploy*" in alert and "(try 1)" in alert and run_id in alert
    assert "999" in alert and f"{af.url}/dags/ml_deploy/runs/" in alert and "/tasks/deploy" in alert
    assert all(m["path"] == f"/services/T000/B000/{PLANTED['slack token']}" for m in slack.messages)


def test_the_page_in_chromium_shows_models_endpoints_chart_and_rolls_back(airflow):
    from playwright.sync_api import sync_playwright

    af, client = airflow["af"], airflow["registry"]
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"{af.url}/auth/login")
            page.get_by_label("Username").fill("admin")
            page.get_by_label("Password").fill(passwords(af)["admin"])
            page.get_by_role("button", name="Sign in").click()
            page.wait_for_url(lambda url: "/auth/login" not in url, timeout=30_000)

            # Inside the Airflow UI: the nav entry opens the plugin page in its frame.
            page.goto(f"{af.url}/plugin/ml-models")
            frame = page.frame_locator("iframe[title='Models & endpoints']")
            serving = frame.locator(f"td.level[data-endpoint='{ENDPOINT}'] .serving-version")
            serving.wait_for(timeout=30_000)
            assert serving.inner_text() == "v2"
            page.screenshot(path=str(SHOTS / "models-page-in-airflow.png"), full_page=True)

            page.goto(f"{af.url}/ml-models/")
            model = page.locator(f"section.model[data-model='{MODEL}']")
            assert model.locator("tr.version").count() == 2
            production = str(client.get_model_version_by_alias(MODEL, "production").version)
            assert "@production" in model.locator(f"tr.version[data-version='{production}']").inner_text()
            assert "eval_" not in model.inner_text()  # the gate's comparison metrics are not held-out metrics
            chart = model.locator("svg.metric-chart")
            assert chart.get_attribute("data-metric") == "accuracy"
            assert chart.locator("circle.point").count() == 2
            assert chart.bounding_box()["width"] > 300  # rendered, not just present
            digest = client.get_model_version(MODEL, "1").tags["snapshot_digest"]
            assert digest[:12] in model.locator("tr.version[data-version='1']").inner_text()
            model.locator("tr.version[data-version='2'] summary").click()
            picture = model.locator("tr.version[data-version='2'] img.evaluation")
            picture.wait_for()
            page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=picture.element_handle())
            ledger = page.locator(f"section.endpoint[data-endpoint='{ENDPOINT}'] tr.ledger")
            outcomes = [ledger.nth(i).inner_text() for i in range(ledger.count())]
            assert len(outcomes) == 2 and all("serving" in o for o in outcomes)
            page.screenshot(path=str(SHOTS / "models-page.png"), full_page=True)

            page.locator(f"td.level[data-endpoint='{ENDPOINT}'] button.rollback").click()
            page.wait_for_url("**/ml-models/?rollback_run=*")
            run_id = page.locator(".rollback-run").inner_text()
            page.screenshot(path=str(SHOTS / "models-page-after-rollback.png"), full_page=True)
        finally:
            browser.close()
    run = af.api("GET", f"/api/v2/dags/ml_deploy/dagRuns/{run_id}")
    assert run["conf"] == {"model": MODEL, "endpoint": ENDPOINT, "action": "rollback"}
    assert run["triggering_user_name"] == "admin"  # created as the signed-in user
    assert af.wait_for_run("ml_deploy", run_id, timeout=120) == "success"
    endpoints = {e["name"]: e for e in af.api("GET", "/ml-models/api/summary")["endpoints"]}
    assert endpoints[ENDPOINT]["serving"]["version"] == "1" and endpoints[ENDPOINT]["deploy_dag"] == "ml_deploy"
    # the shipped specs' levels are endpoints too (their deploy DAGs name them), serving nothing yet
    assert endpoints["demo-production"]["serving"] is None
    assert endpoints["demo-production"]["deploy_dag"] == "demo_classifier__deploy"


def test_anonymous_and_viewer_requests_are_refused_what_they_may_not_do(airflow):
    import urllib.error
    import urllib.request

    af = airflow["af"]
    for path in ("/ml-models/", "/ml-models/api/summary", f"/ml-models/versions/{MODEL}/1/evaluation.svg"):
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(af.url + path, timeout=10)
        assert refused.value.code == 401, path
    viewer = AirflowRest(af.url, user="viewer", password=passwords(af)["viewer"])
    summary = viewer.api("GET", "/ml-models/api/summary")
    assert [m["name"] for m in summary["models"]] == [MODEL]
    request = urllib.request.Request(f"{af.url}/ml-models/endpoints/{ENDPOINT}/rollback", data=b"model=" + MODEL.encode(),
                                     headers={"Authorization": f"Bearer {viewer.token()}",
                                              "Content-Type": "application/x-www-form-urlencoded"}, method="POST")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    assert refused.value.code == 403 and b"may not trigger ml_deploy" in refused.value.read()
    forged = urllib.request.Request(request.full_url, data=request.data, method="POST", headers={
        **request.headers, "Authorization": f"Bearer {af.token()}", "Origin": "http://evil.example"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(forged, timeout=10)
    assert refused.value.code == 403
    runs = af.api("GET", "/api/v2/dags/ml_deploy/dagRuns?limit=100")["dag_runs"]
    assert sum(r["conf"].get("action") == "rollback" for r in runs) == 1  # only the admin's


def test_a_backfill_of_batch_scoring_gives_a_partition_per_day_and_a_rerun_replaces_one(airflow):
    """Three days (a week took 131 s of the suite and showed nothing three days do not)."""
    import pyarrow.parquet as pq

    af, demo, client = airflow["af"], airflow["demo"], airflow["registry"]
    af.api("PATCH", "/api/v2/dags/ml_batch_scoring", {"is_paused": False})
    af.api("POST", "/api/v2/backfills", {"dag_id": "ml_batch_scoring", "from_date": "2026-01-02T04:00:00Z",
                                         "to_date": "2026-01-04T04:00:00Z", "max_active_runs": 1,
                                         "dag_run_conf": {"rows_per_shard": 30}, "reprocess_behavior": "none"})
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        runs = [r for r in af.api("GET", "/api/v2/dags/ml_batch_scoring/dagRuns?limit=100")["dag_runs"]
                if r["run_type"] == "backfill"]
        if len(runs) == 3:
            break
        time.sleep(0.5)
    assert len(runs) == 3
    for run in runs:
        assert af.wait_for_run("ml_batch_scoring", run["dag_run_id"], timeout=600) == "success"
    production = str(client.get_model_version_by_alias(MODEL, "production").version)
    root = demo / "artifacts" / "predictions" / MODEL
    partitions = sorted(p.name for p in root.iterdir() if (p / "manifest.json").exists())
    assert len(partitions) == 3 and partitions[0].startswith("interval=20260102T040000Z")
    conn = psycopg2.connect(airflow["source"])
    for run in runs:
        name = (f"interval={run['data_interval_start'][:19].replace('-', '').replace(':', '')}Z--"
                f"{run['data_interval_end'][:19].replace('-', '').replace(':', '')}Z")
        manifest = artifacts.open_verified(str(root / name), kind="predictions")
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM demo_training_rows WHERE event_time >= %s AND event_time < %s",
                        (run["data_interval_start"], run["data_interval_end"]))
            assert manifest.row_count == cur.fetchone()[0] > 30
        shards = af.api("GET", f"/api/v2/dags/ml_batch_scoring/dagRuns/{run['dag_run_id']}/taskInstances"
                               "?task_id=score&limit=100")["task_instances"]
        assert len(shards) == len(manifest.files) == -(-manifest.row_count // 30)  # one mapped task per shard
        assert sorted(s["map_index"] for s in shards) == list(range(len(shards)))
        table = pq.read_table([str(root / name / e.path) for e in manifest.files])
        assert set(table.column("model_version").to_pylist()) == {manifest.extra["model_version"]} == {production}
        assert table.num_rows == manifest.row_count and manifest.lineage["run_id"] == run["dag_run_id"]
    conn.close()

    # Re-run one interval: its partition is replaced (a new write), the other two are untouched.
    run = runs[0]
    name = next(p for p in partitions if p.startswith(f"interval={run['data_interval_start'][:10].replace('-', '')}"))
    before = {p: (root / p / "manifest.json").read_bytes() for p in partitions}
    af.api("POST", f"/api/v2/dags/ml_batch_scoring/dagRuns/{run['dag_run_id']}/clear", {"dry_run": False})
    time.sleep(2)
    assert af.wait_for_run("ml_batch_scoring", run["dag_run_id"], timeout=300) == "success"
    after = {p: (root / p / "manifest.json").read_bytes() for p in partitions}
    assert after[name] != before[name] and {p for p in partitions if after[p] != before[p]} == {name}
    assert sorted(p.name for p in root.iterdir() if (p / "manifest.json").exists()) == partitions
    again = artifacts.open_verified(str(root / name), kind="predictions")
    assert [w.name for w in (root / name).iterdir() if w.name.startswith("w-")] == [again.files[0].path.split("/")[0]]
    events = af.api("GET", "/api/v2/assets/events?limit=100&name_pattern=" + MODEL + ".predictions")
    assert sum(e["source_dag_id"] == "ml_batch_scoring" for e in events["asset_events"]) == 4


def test_a_published_snapshot_triggers_one_training_run_and_is_not_trained_twice(airflow):
    from tests.helpers import breast_cancer_table, write_snapshot

    af, demo, client = airflow["af"], airflow["demo"], airflow["registry"]
    dag = "ml_training_pipeline"
    asset_triggered = lambda: [r for r in af.api("GET", f"/api/v2/dags/{dag}/dagRuns?limit=100")["dag_runs"]  # noqa: E731
                               if r["run_type"] == "asset_triggered"]
    assert asset_triggered() == []  # the pipeline's own snapshots (three runs so far) triggered nothing
    table = breast_cancer_table().slice(0, 400)
    uri = f"file://{demo}/artifacts/published/{MODEL}/batch-1"
    snapshot = write_snapshot(uri, table, lineage={"producer": "a data team's DAG"})
    (asset,) = [a for a in af.api("GET", f"/api/v2/assets?name_pattern={MODEL}.training_snapshots")["assets"]]
    af.api("POST", "/api/v2/assets/events", {"asset_id": asset["id"], "extra": {"uri": uri}})
    deadline = time.monotonic() + 90
    while not (triggered := asset_triggered()) and time.monotonic() < deadline:
        time.sleep(0.5)
    (first,) = triggered
    assert af.wait_for_run(dag, first["dag_run_id"], timeout=300) == "success", af.failed_task_logs(dag, first["dag_run_id"])
    (trained,) = [v for v in client.search_model_versions(f"name = '{MODEL}'")
                  if v.tags.get("lineage.run_id") == first["dag_run_id"]]
    assert trained.tags["snapshot_digest"] == snapshot.digest
    assert "training on the newest published snapshot" in af.task_log(dag, first["dag_run_id"], "extract")
    count = len(client.search_model_versions(f"name = '{MODEL}'"))

    # The same snapshot published again: the run skips it, nothing is registered twice.
    af.api("POST", "/api/v2/assets/events", {"asset_id": asset["id"], "extra": {"uri": uri}})
    deadline = time.monotonic() + 90
    while len(triggered := asset_triggered()) < 2 and time.monotonic() < deadline:
        time.sleep(0.5)
    second = next(r for r in triggered if r["dag_run_id"] != first["dag_run_id"])
    af.wait_for_run(dag, second["dag_run_id"], timeout=120)
    tis = af.task_instances(dag, second["dag_run_id"])
    assert tis["extract"]["state"] == "skipped" and tis["train"]["state"] == "skipped"
    assert f"was already trained: {MODEL} version {trained.version}" in af.task_log(dag, second["dag_run_id"], "extract")
    assert len(client.search_model_versions(f"name = '{MODEL}'")) == count


@pytest.mark.parametrize("dag_id, conf, param", [
    ("ml_training_pipeline", {"source_table": "rows; DROP TABLE rows"}, "source_table"),
    ("ml_training_pipeline", {"test_fraction": 0.9}, "test_fraction"),
    ("ml_training_pipeline", {"estimator": "NoSuchEstimator"}, "estimator"),
    ("ml_training_pipeline", {"hyperparameters": "max_iter=5"}, "hyperparameters"),
    ("ml_deploy", {"action": "delete"}, "action"),
    ("ml_deploy", {"canary_percent": 0}, "canary_percent"),
    ("ml_batch_scoring", {"rows_per_shard": 0}, "rows_per_shard"),
])
def test_bad_params_are_refused_by_the_api_server_naming_the_param_and_create_no_run(airflow, dag_id, conf, param):
    af = airflow["af"]
    before = af.api("GET", f"/api/v2/dags/{dag_id}/dagRuns?limit=100")["total_entries"]
    with pytest.raises(AirflowApiError) as refused:
        af.trigger(dag_id, conf)
    assert ": 400 " in str(refused.value) and param in str(refused.value), str(refused.value)
    assert af.api("GET", f"/api/v2/dags/{dag_id}/dagRuns?limit=100")["total_entries"] == before


def test_no_planted_secret_reaches_logs_files_artifacts_databases_or_child_processes(airflow, slack):
    """After everything above ran: task and component logs, artifacts, endpoint state and
    server log (every file under AIRFLOW_HOME), the metadata and registry databases (pg_dump),
    and the environment of the model server the deploy task started (/proc/<pid>/environ)."""
    assert any(PLANTED["slack token"] in m["path"] for m in slack.messages)  # planted where it is used
    secrets = list(PLANTED.values())
    found = []
    files = [p for p in Path(airflow["demo"]).rglob("*") if p.is_file()]
    assert any("logs" in p.parts for p in files) and any(p.name == "manifest.json" for p in files)
    for path in files:
        data = path.read_bytes()
        found += [f"{path}: {name}" for name, s in PLANTED.items() if s.encode() in data]
    pg_dump = shutil.which("pg_dump") or max(glob.glob("/usr/lib/postgresql/*/bin/pg_dump"), default=None)
    assert pg_dump, "pg_dump is needed (it comes with PostgreSQL: apt-get install postgresql-client)"
    for database, uri in airflow["databases"].items():
        dump = subprocess.run([pg_dump, "--data-only", uri], capture_output=True, text=True, check=True).stdout
        assert "model_versions" in dump or "task_instance" in dump  # a real dump of the tables
        found += [f"{database} database: {name}" for name, s in PLANTED.items() if s in dump]
    state = json.loads((Path(airflow["demo"]) / "endpoints" / ENDPOINT / "state.json").read_text())
    environ = Path(f"/proc/{state['pid']}/environ").read_bytes().decode(errors="replace").split("\0")
    assert any(v.startswith("ML_SERVE_ARTIFACT_ROOTS=") for v in environ)  # it is the server's
    found += [f"model server environment: {v.split('=')[0]}" for v in environ
              if any(s in v for s in secrets) or v.startswith(("AIRFLOW_CONN_", "MLFLOW_TRACKING_"))]
    assert found == []
