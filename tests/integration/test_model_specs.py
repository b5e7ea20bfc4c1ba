"""Two models declared by spec, under a real Airflow (api-server, scheduler, dag-processor,
triggerer; PostgreSQL for the metadata, the source and the registry).

In file order: both models' training DAGs triggered at once through the REST API, each training
on its own table, registering its own versions, deploying to its own first-level endpoint and,
once that endpoint has served enough requests well (its /metrics, read by the triggerer), being
promoted to its production endpoint -> a spec added while the scheduler runs appears as DAGs; a
broken spec shows as its own import error -> with that spec still broken, a version that errors
on the first level is not promoted while production serves every request -> that endpoint rolls
back from its own ledger, every other endpoint serving what it served -> the models page in
Chromium: a promotion waiting for approval approved there, a chosen version deployed, a level's
version promoted to the next, all as the signed-in user; a user kept off the text model's DAGs
(tests/integration/per_model_auth.py) sees it without buttons, and Airflow refuses them too; a
viewer sees no button; dark mode.

The load on the endpoints is the existing Locust scenario (tests/load), paced.
"""

from __future__ import annotations

import json
import os
import shutil
import time
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
     promotion: {promotion}}}
"""
EVIDENCE = "{{min_requests: 20, max_error_rate_increase: 0.05, max_p99_increase: 20, window_minutes: 4{feedback}}}"
MODELS = {
    TAB: {"owner": "team-tab", "table": "demo_training_rows", "feedback": "", "model": "{class: sklearn, estimator: LogisticRegression, "
                                                                      "params: {max_iter: 300}, target: target, "
                                                                      "exclude: [event_time]}"},
    # the text model's production also needs its accuracy on posts a person reviewed
    TEXT: {"owner": "team-text", "table": "demo_moderation_posts",
           "feedback": ", feedback_table: sp_text_reviewed, accuracy_floor: 0.6",
           "model": "{class: text, target: label, exclude: [event_time, lang, length]}"},
}
SQL = "SELECT * FROM {table} WHERE event_time < '{{{{ window_end.isoformat() }}}}'\n"


def spec_text(name: str, dev: str | None = None, promotion: str | None = None) -> str:
    m = MODELS[name]
    return SPEC.format(name=name, owner=m["owner"], table=m["table"], model=m["model"],
                       promotion=promotion or EVIDENCE.format(feedback=m["feedback"]),
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
    # tab-ops may work on every DAG but the text model's (an auth manager with per-DAG rules)
    env.update({"AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin,viewer:viewer,tab-ops:user",
                "AIRFLOW__CORE__AUTH_MANAGER": "tests.integration.per_model_auth.PerModelAuthManager",
                "ML_TEST_DAG_DENY": f"tab-ops:{TEXT}__"})
    with running_airflow(make_database, root / "demo", "mlp_spec", days=1, model="unused", endpoint="unused",
                         extra_env=env) as stack:
        from demo.moderation_posts import seed

        with psycopg2.connect(stack["source"]) as conn:
            seed(conn, "%s", "TIMESTAMPTZ")
            with conn.cursor() as cur:  # what reviewers labelled: a sample of the posts, with their label
                cur.execute("CREATE VIEW sp_text_reviewed AS SELECT text, label FROM demo_moderation_posts "
                            "ORDER BY event_time LIMIT 400")
        try:
            yield {**stack, "specs": specs, "dags": dags, "root": root}
        finally:
            from operators.deploy.targets.local import LocalServerTarget

            for load in LOADS.values():
                load.__exit__()
            for endpoint in sum(ENDPOINTS.values(), []):
                LocalServerTarget(endpoint, state_dir=str(root / "demo" / "endpoints" / endpoint)).stop()


def served(airflow, endpoint: str) -> dict:
    from operators.deploy.endpoint_client import ping

    return ping(url_of(airflow, endpoint)) or {}


LOADS: dict = {}  # every load started, stopped with the stack even when a test fails mid-way


class Traffic:
    """The existing Locust scenario (tests/load) against one endpoint, paced (2 users, 20 ms apart)
    so the Airflow beside it keeps its cores: the rows its /ping's features ask for."""

    def __init__(self, url: str, features: list[str], workdir: Path, wait_flowing: float = 30.0):
        from demo.clients import row_for
        from tests.load.locust_load import LocustLoad

        self.load = LOADS[url] = LocustLoad(url, features, [row_for(features)], workdir, users=2, seconds=900, max_requests=0,
                               batch_rows=2, batch_share=0.1, think_ms=20).start(wait_flowing)

    def stop(self) -> dict:
        """Locust's report: requests, valid, failures by reason, versions that answered."""
        report = self.load.stop()
        report["failed"] = report["requests"] - report["valid"]
        return report


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
        traffic[name] = Traffic(url_of(airflow, dev), answer["features"], airflow["root"] / f"load-{name}")
    for name, run_id in runs.items():
        wait_ok(af, f"{name}__train", run_id)
    for name in (TAB, TEXT):
        report = traffic[name].stop()
        assert report["failed"] == 0 and report["requests"] >= 20, report
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
    tis = af.task_instances(f"{TEXT}__train", runs[TEXT])
    assert tis["feedback_production"]["state"] == "success"
    log = af.task_log(f"{TEXT}__train", runs[TEXT], "feedback_production", tis["feedback_production"]["try_number"])
    assert "labelled row(s) of sp_text_reviewed reaches the floor 0.6000" in log, log[-2000:]
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
    production = Traffic(url_of(airflow, prod), features, airflow["root"] / "load-prod")
    # Trained without one feature, the new version refuses the rows its clients send. The gate is
    # told to prefer it (direction minimize): what is tested is the next level's evidence.
    run_id = af.trigger(f"{TAB}__train", {"exclude_columns": ["event_time", features[0]], "direction": "minimize"},
                        logical_date=None)
    until(lambda: served(airflow, dev).get("model_version") == "2", 420, "version 2 never reached development")
    clients = Traffic(url_of(airflow, dev), features, airflow["root"] / "load-dev", wait_flowing=0)  # it errors
    assert af.wait_for_run(f"{TAB}__train", run_id, timeout=420) == "failed"
    clients, production = clients.stop(), production.stop()
    tis = af.task_instances(f"{TAB}__train", run_id)
    assert tis["evidence_production"]["state"] == "failed"
    assert {tis[t]["state"] for t in ("promote_production", "deploy_production")} == {"upstream_failed"}
    log = af.task_log(f"{TAB}__train", run_id, "evidence_production", tis["evidence_production"]["try_number"])
    assert "not promoted to sp-tab-prod (evidence against it)" in log and "error rate above" in log
    assert clients["failed"] > 0 and production["failed"] == 0 and production["requests"] > 100, production
    assert set(production["versions"]) == {"1"}, production  # production answered with the version it had
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


def test_the_page_in_chromium_approves_deploys_and_promotes_as_the_user_and_a_viewer_gets_no_button(airflow):
    import urllib.error
    import urllib.request

    from playwright.sync_api import sync_playwright

    af, registry, specs, dags = airflow["af"], airflow["registry"], airflow["specs"], airflow["dags"]
    shots = Path(os.environ.get("ML_TEST_OUTPUT", REPO / "test-output"))
    shots.mkdir(parents=True, exist_ok=True)
    dev, prod = ENDPOINTS[TEXT]
    # the text model's spec repaired, its production level now approved by a person (and still
    # held to its labelled feedback)
    (specs / f"{TEXT}.yaml").write_text(spec_text(TEXT, promotion="{approval: true, window_minutes: 10, "
                                                                  "feedback_table: sp_text_reviewed, "
                                                                  "accuracy_floor: 0.6}"))
    def approval_parsed() -> bool:
        try:
            tasks = af.api("GET", f"/api/v2/dags/{TEXT}__train/tasks")["tasks"]
        except Exception:  # noqa: BLE001 - not parsed again yet
            return False
        return "approve_production" in {t["task_id"] for t in tasks}

    until(approval_parsed, 90, "the repaired spec's approval task did not appear")
    run_id = af.trigger(f"{TEXT}__train", {"seed": 7}, logical_date=None)  # another split: a new version
    until(lambda: af.task_instances(f"{TEXT}__train", run_id).get("approve_production", {}).get("state")
          == "awaiting_input",
          420, "the training run never waited for approval")
    passwords = json.loads(af._passwords.read_text())
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True)
        try:
            def signed_in(user: str, **options):
                page = browser.new_context(viewport={"width": 1500, "height": 1100}, **options).new_page()
                page.goto(f"{af.url}/auth/login")
                page.get_by_label("Username").fill(user)
                page.get_by_label("Password").fill(passwords[user])
                page.get_by_role("button", name="Sign in").click()
                page.wait_for_url(lambda url: "/auth/login" not in url, timeout=30_000)
                page.goto(f"{af.url}/ml-models/")
                return page

            def cell(page, endpoint: str):
                return page.locator(f"td.level[data-endpoint='{endpoint}']")

            page = signed_in("admin")
            late = ["sp_late"] if "sp_late__train" in dag_ids(af) else []  # added by the test before
            assert [r.get_attribute("data-model") for r in page.locator("tr.model-row").all()] == [*late, TAB, TEXT]
            for endpoint, version in ((ENDPOINTS[TAB][0], "v1"), (ENDPOINTS[TAB][1], "v1"), (dev, "v2"),
                                      (prod, "v1")):
                assert cell(page, endpoint).locator(".serving-version").inner_text() == version, endpoint
            assert not late or "serves nothing yet" in cell(page, "sp-late-dev").inner_text()
            waiting = cell(page, prod)
            assert "waiting for approval: Promote sp_text to production?" in waiting.inner_text()
            page.screenshot(path=str(shots / "models-table.png"), full_page=True)

            waiting.locator("button.approve").click()  # answered as admin, through the REST API
            page.wait_for_url("**/ml-models/?answered=*")
            wait_ok(af, f"{TEXT}__train", run_id)
            assert served(airflow, prod)["model_version"] == "2"
            page.goto(f"{af.url}/ml-models/")
            assert cell(page, prod).locator(".serving-version").inner_text() == "v2"
            assert "waiting for approval" not in cell(page, prod).inner_text()

            cell(page, dev).locator("select.deploy-version").select_option("1")  # any registered version
            cell(page, dev).locator("button.deploy").click()
            page.wait_for_url("**/ml-models/?deploy_run=*")
            deploy_run = page.locator(".deploy-run").inner_text()
            wait_ok(af, f"{TEXT}__deploy", deploy_run)
            assert served(airflow, dev)["model_version"] == "1"

            page.goto(f"{af.url}/ml-models/")
            promote = cell(page, dev).locator("button.promote")
            assert promote.inner_text() == "Promote v1 to production"
            promote.click()
            page.wait_for_url("**/ml-models/?promote_run=*")
            promote_run = page.locator(".promote-run").inner_text()
            wait_ok(af, f"{TEXT}__deploy", promote_run)
            page.screenshot(path=str(shots / "models-table-after-promote.png"), full_page=True)

            viewer = signed_in("viewer")
            assert viewer.locator("tr.model-row").count() == 2 + len(late)
            assert viewer.locator("button.deploy, button.rollback, button.promote, button.approve").count() == 0
            tab_ops = signed_in("tab-ops")  # may deploy the tabular model, not the text model
            assert tab_ops.locator("tr.model-row").count() == 2 + len(late)
            tab_dev = cell(tab_ops, ENDPOINTS[TAB][0])
            assert tab_dev.locator("button.deploy").count() == 1 and tab_dev.locator("button.rollback").count() == 1
            assert tab_ops.locator(f"tr.model-row[data-model='{TEXT}'] button").count() == 0
            assert cell(tab_ops, dev).locator(".serving-version").inner_text() == "v1"  # seen, not touched
            dark = signed_in("viewer", color_scheme="dark")
            background = dark.evaluate("getComputedStyle(document.body).backgroundColor")
            assert background == "rgb(17, 24, 39)", background  # the Airflow UI's dark gray, not white
            dark.screenshot(path=str(shots / "models-table-dark.png"), full_page=True)
        finally:
            browser.close()
    for dag_id, run in ((f"{TEXT}__deploy", deploy_run), (f"{TEXT}__deploy", promote_run)):
        assert af.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run}")["triggering_user_name"] == "admin"
    assert af.api("GET", f"/api/v2/dags/{TEXT}__deploy/dagRuns/{promote_run}")["conf"] == {
        "model": TEXT, "version": "1", "action": "deploy", "endpoint": prod, "move_alias": "production"}
    approval = af.api("GET", f"/api/v2/dags/{TEXT}__train/dagRuns/{run_id}/taskInstances/approve_production/-1"
                             "/hitlDetails")
    assert approval["chosen_options"] == ["Approve"] and approval["responded_by_user"]["name"] == "admin"
    assert served(airflow, prod)["model_version"] == "1"
    assert str(registry.get_model_version_by_alias(TEXT, "production").version) == "1"  # the alias followed
    assert [(e["version"], e["reason"].split(" by ")[0]) for e in ledger(af, prod)] == [
        ("1", "promoted to production"), ("2", "promoted to production"), ("1", "promoted to production")]
    from demo.local_airflow import AirflowApiError, AirflowRest

    tab_ops = AirflowRest(af.url, user="tab-ops", password=passwords["tab-ops"])
    with pytest.raises(AirflowApiError, match=": 403 "):  # Airflow itself refuses what the page hid
        tab_ops.trigger(f"{TEXT}__deploy", {"action": "rollback", "endpoint": dev}, logical_date=None)
    request = urllib.request.Request(f"{af.url}/ml-models/endpoints/{dev}/rollback", data=f"model={TEXT}".encode(),
                                     headers={"Authorization": f"Bearer {tab_ops.token()}",
                                              "Content-Type": "application/x-www-form-urlencoded"}, method="POST")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    assert refused.value.code == 403 and f"may not trigger {TEXT}__deploy".encode() in refused.value.read()
    with pytest.raises(urllib.error.HTTPError) as anonymous:
        urllib.request.urlopen(f"{af.url}/ml-models/", timeout=10)
    assert anonymous.value.code == 401
