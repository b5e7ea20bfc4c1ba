"""Two models declared by spec, under a real Airflow (api-server, scheduler, dag-processor,
triggerer; PostgreSQL for the metadata, the source and the registry).

In file order: both models' training DAGs triggered at once through the REST API, each training
on its own table, registering its own versions, deploying to its own first-level endpoint and,
once that endpoint has served enough requests well (its /metrics, read by the triggerer), being
promoted to its production endpoint -> a spec added while the scheduler runs appears as DAGs; a
broken spec shows as its own import error -> with that spec still broken, a version that errors
on the first level is not promoted while production serves every request -> that endpoint rolls
back from its own ledger, every other endpoint serving what it served.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import psycopg2
import pytest

from operators.specs.dag_factory import write_dag_files
from tests.integration.airflow_stack import running_airflow

REPO = Path(__file__).resolve().parents[2]
TAB, TEXT = "sp_tabular", "sp_text"
ENDPOINTS = {TAB: ["sp-tab-dev", "sp-tab-prod"], TEXT: ["sp-text-dev", "sp-text-prod"]}
SPEC = """\
name: {name}
owners: [{owner}]
source: {{sql: sql/{table}.sql}}
model: {model}
gate: {{metric: accuracy}}
schedule: null
levels:
  - {{name: development, endpoint: {dev}, target: local}}
  - {{name: production, endpoint: {prod}, target: local,
     promotion: {{min_requests: 20, max_error_rate_increase: 0.05, max_p99_increase: 20, window_minutes: 4}}}}
"""
MODELS = {
    TAB: {"owner": "team-tab", "table": "demo_training_rows", "model": "{class: sklearn, estimator: LogisticRegression, "
                                                                      "params: {max_iter: 300}, target: target, "
                                                                      "exclude: [event_time]}"},
    TEXT: {"owner": "team-text", "table": "demo_moderation_posts",
           "model": "{class: text, target: label, exclude: [event_time, lang, length]}"},
}
SQL = "SELECT * FROM {table} WHERE event_time < '{{{{ window_end.isoformat() }}}}'\n"


def spec_text(name: str, dev: str | None = None) -> str:
    m = MODELS[name]
    return SPEC.format(name=name, owner=m["owner"], table=m["table"], model=m["model"],
                       dev=dev or ENDPOINTS[name][0], prod=ENDPOINTS[name][1])


@pytest.fixture(scope="module")
def airflow(make_database, tmp_path_factory):
    root = tmp_path_factory.mktemp("spec-airflow")
    specs, dags = root / "models", root / "dags"
    (specs / "sql").mkdir(parents=True)
    for name, m in MODELS.items():
        (specs / "sql" / f"{m['table']}.sql").write_text(SQL.format(table=m["table"]))
        (specs / f"{name}.yaml").write_text(spec_text(name))
    shutil.copytree(REPO / "dags", dags, ignore=shutil.ignore_patterns("models", "__pycache__"))
    write_dag_files(specs, dags / "models")
    env = {"AIRFLOW__CORE__DAGS_FOLDER": str(dags), "ML_MODEL_SPECS": str(specs),
           # a new DAG file is looked for every 5 s, a known one re-parsed every 5 s (defaults: 300 s, 30 s)
           "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5", "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "5"}
    with running_airflow(make_database, root / "demo", "mlp_spec", days=1, model="unused", endpoint="unused",
                         extra_env=env) as stack:
        from demo.moderation_posts import seed

        with psycopg2.connect(stack["source"]) as conn:
            seed(conn, "%s", "TIMESTAMPTZ")
        try:
            yield {**stack, "specs": specs, "dags": dags}
        finally:
            from operators.deploy.targets.local import LocalServerTarget

            for endpoint in sum(ENDPOINTS.values(), []):
                LocalServerTarget(endpoint, state_dir=str(root / "demo" / "endpoints" / endpoint)).stop()


def served(airflow, endpoint: str) -> dict:
    from operators.deploy.endpoint_client import ping

    return ping(url_of(airflow, endpoint)) or {}


class Traffic:
    """Clients of one endpoint, from a thread: the rows its /ping's features ask for, counted."""

    def __init__(self, url: str, features: list[str]):
        self.url, self.ok, self.failed, self._stop = url, 0, 0, threading.Event()
        from demo.clients import row_for

        self.body = json.dumps({"instances": [row_for(features)] * 2}).encode()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self._stop.is_set():
            req = urllib.request.Request(self.url + "/invocations", data=self.body,
                                         headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(req, timeout=10):
                    self.ok += 1
            except (urllib.error.URLError, OSError):
                self.failed += 1
            time.sleep(0.05)

    def stop(self) -> Traffic:
        self._stop.set()
        self.thread.join()
        return self


def url_of(airflow, endpoint: str) -> str:
    from operators.deploy.targets.local import LocalServerTarget

    return LocalServerTarget(endpoint, state_dir=str(airflow["demo"] / "endpoints" / endpoint)).url


def until(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, what
        time.sleep(0.5)
    return value


def run_ok(af, dag_id: str, conf: dict, timeout: float = 420) -> str:
    run_id = af.trigger(dag_id, conf, logical_date=None)
    return wait_ok(af, dag_id, run_id, timeout)


def wait_ok(af, dag_id: str, run_id: str, timeout: float = 420) -> str:
    state = af.wait_for_run(dag_id, run_id, timeout=timeout)
    if state != "success":
        tis = af.task_instances(dag_id, run_id)
        logs = {t: af.task_log(dag_id, run_id, t, ti["try_number"])[-3000:] for t, ti in tis.items()
                if ti["state"] == "failed"}
        pytest.fail(f"{dag_id} {run_id}: {state}: { {t: ti['state'] for t, ti in tis.items()} }\n{logs}")
    return run_id


def dag_ids(af) -> set[str]:
    return {d["dag_id"] for d in af.api("GET", "/api/v2/dags?limit=100")["dags"]}


def ledger(af, endpoint: str) -> list[dict]:
    events = af.api("GET", f"/api/v2/assets/events?name_pattern=endpoint.{endpoint}&order_by=timestamp&limit=100")
    return [e["extra"] for e in events["asset_events"] if e["extra"].get("endpoint") == endpoint]


def test_two_models_triggered_at_once_each_train_on_their_own_table_and_deploy_to_their_own_endpoint(airflow):
    af, registry = airflow["af"], airflow["registry"]
    deadline = time.monotonic() + 120
    while not {f"{TAB}__train", f"{TEXT}__train", f"{TAB}__deploy", f"{TEXT}__deploy"} <= dag_ids(af):
        assert time.monotonic() < deadline, f"the spec DAGs were not parsed: {sorted(dag_ids(af))}"
        time.sleep(1)
    dags = {d["dag_id"]: d for d in af.api("GET", "/api/v2/dags?limit=100")["dags"]}
    assert {t["name"] for t in dags[f"{TEXT}__train"]["tags"]} >= {"model:sp_text", "owner:team-text"}
    for dag_id in (f"{TAB}__train", f"{TEXT}__train", f"{TAB}__deploy", f"{TEXT}__deploy"):
        af.api("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": False})
    runs = {name: af.trigger(f"{name}__train", {}, logical_date=None) for name in (TAB, TEXT)}  # at once
    traffic = {}
    for name in (TAB, TEXT):  # each first level serves, then its clients' requests are the evidence
        dev = ENDPOINTS[name][0]
        answer = until(lambda: served(airflow, dev), 420, f"{dev} never served")
        traffic[name] = Traffic(url_of(airflow, dev), answer["features"])
    for name, run_id in runs.items():
        wait_ok(af, f"{name}__train", run_id)
    for name in (TAB, TEXT):
        assert traffic[name].stop().failed == 0
        (version,) = registry.search_model_versions(f"name = '{name}'")
        assert version.tags["lineage.dag_id"] == f"{name}__train" and version.tags["lineage.run_id"] == runs[name]
        for level in ("development", "production"):
            assert registry.get_model_version_by_alias(name, level).version == version.version
        for endpoint in ENDPOINTS[name]:
            answer = served(airflow, endpoint)
            assert answer["model_version"] == str(version.version) and answer["source"] == version.source, answer
            assert f"/models/{name}/" in answer["source"]  # the artifact of its own pipeline
            assert [e["version"] for e in ledger(af, endpoint)] == [str(version.version)]
        tis = af.task_instances(f"{name}__train", runs[name])
        assert tis["evidence_production"]["state"] == "success"
        log = af.task_log(f"{name}__train", runs[name], "evidence_production", tis["evidence_production"]["try_number"])
        assert "within the tolerances" in log
    # each trained on its own table: the text model's features are its text, the tabular model's numbers
    assert served(airflow, ENDPOINTS[TEXT][0])["features"] == ["text"]
    assert "text" not in served(airflow, ENDPOINTS[TAB][0])["features"]


def test_a_new_spec_appears_as_dags_and_a_broken_one_is_its_own_import_error(airflow):
    af, specs, dags = airflow["af"], airflow["specs"], airflow["dags"]
    new = spec_text(TAB).replace(f"name: {TAB}", "name: sp_late").replace("sp-tab-", "sp-late-")
    (specs / "sp_late.yaml").write_text(new)
    write_dag_files(specs, dags / "models")
    started = time.monotonic()
    while not {"sp_late__train", "sp_late__deploy"} <= dag_ids(af):
        assert time.monotonic() - started < 60, "a spec added while the scheduler runs did not appear"
        time.sleep(1)
    print(f"the new spec's DAGs appeared after {time.monotonic() - started:.1f} s")
    # the text model's spec now takes the tabular model's endpoint: its own DAG file fails, alone
    (specs / f"{TEXT}.yaml").write_text(spec_text(TEXT, dev=ENDPOINTS[TAB][0]))
    started = time.monotonic()
    while not (errors := [e for e in af.api("GET", "/api/v2/importErrors")["import_errors"]
                          if e["filename"].endswith(f"models/{TEXT}.py")]):
        assert time.monotonic() - started < 60, "the broken spec's import error did not show"
        time.sleep(1)
    (error,) = errors
    assert f"{TEXT}.yaml: levels[0].endpoint: endpoint 'sp-tab-dev' already serves model 'sp_tabular'" in \
        error["stack_trace"]
    assert len(af.api("GET", "/api/v2/importErrors")["import_errors"]) == 1  # nobody else's file
    dag = af.api("GET", f"/api/v2/dags/{TAB}__deploy")
    assert not dag["has_import_errors"] and not dag["is_stale"]


def test_a_version_that_errors_on_the_first_level_is_not_promoted_and_production_serves_throughout(airflow):
    af, registry = airflow["af"], airflow["registry"]
    dev, prod = ENDPOINTS[TAB]
    features = served(airflow, dev)["features"]
    production = Traffic(url_of(airflow, prod), features)
    # Trained without one feature, the new version refuses the rows its clients send. The gate is
    # told to prefer it (direction minimize): what is tested is the next level's evidence.
    run_id = af.trigger(f"{TAB}__train", {"exclude_columns": ["event_time", features[0]], "direction": "minimize"},
                        logical_date=None)
    until(lambda: served(airflow, dev).get("model_version") == "2", 420, "version 2 never reached development")
    clients = Traffic(url_of(airflow, dev), features)
    assert af.wait_for_run(f"{TAB}__train", run_id, timeout=420) == "failed"
    clients.stop(), production.stop()
    tis = af.task_instances(f"{TAB}__train", run_id)
    assert tis["evidence_production"]["state"] == "failed"
    assert {tis[t]["state"] for t in ("promote_production", "deploy_production")} == {"upstream_failed"}
    log = af.task_log(f"{TAB}__train", run_id, "evidence_production", tis["evidence_production"]["try_number"])
    assert "not promoted to sp-tab-prod (evidence against it)" in log and "error rate above" in log
    assert clients.failed > 0 and production.failed == 0 and production.ok > 0
    assert str(registry.get_model_version_by_alias(TAB, "production").version) == "1"
    assert served(airflow, prod)["model_version"] == "1"


def test_one_endpoint_rolls_back_from_its_own_ledger_leaving_every_other_endpoint_alone(airflow):
    af = airflow["af"]
    dev = ENDPOINTS[TAB][0]
    others = {e: served(airflow, e) for e in (ENDPOINTS[TAB][1], *ENDPOINTS[TEXT])}
    assert [e["version"] for e in ledger(af, dev)] == ["1", "2"]
    run_ok(af, f"{TAB}__deploy", {"action": "rollback", "endpoint": dev})
    assert served(airflow, dev)["model_version"] == "1"
    assert [(e["version"], e["reason"]) for e in ledger(af, dev)][-1] == ("1", "rollback (from the ledger)")
    for endpoint, before in others.items():  # production, and the other model (its spec broken meanwhile)
        now = served(airflow, endpoint)
        assert (now["source"], now["model_version"]) == (before["source"], before["model_version"]), endpoint
        assert len(ledger(af, endpoint)) == 1
