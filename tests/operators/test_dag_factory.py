"""The DAG factory: each spec gives its model's DAGs with the spec's values as defaults, and a
broken spec is the import error of its own DAG file while the other models' DAGs load."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from unittest import mock

import pytest

from operators.specs.dag_factory import STUB, model_dags, write_dag_files
from operators.specs.model_spec import REPO, SpecError


@pytest.fixture(scope="module")
def demo_dags() -> dict:
    return {**model_dags("demo_classifier"), **model_dags("demo_moderation")}


def test_each_spec_gives_its_dags_with_ids_from_the_name_and_tags_for_model_and_owners(demo_dags):
    assert sorted(demo_dags) == ["demo_classifier__deploy", "demo_classifier__score", "demo_classifier__train",
                                 "demo_moderation__deploy", "demo_moderation__train"]  # only one spec scores
    train = demo_dags["demo_moderation__train"]
    assert {"model:demo_moderation", "owner:trust-and-safety", "owner:ml-platform", "text", "moderation"} <= set(train.tags)
    assert train.default_args["owner"] == "trust-and-safety, ml-platform"
    assert train.fileloc == __file__  # the file that asked for them: its import error, its code view


def test_the_training_params_default_to_the_spec(demo_dags):
    text = demo_dags["demo_moderation__train"]
    defaults = {k: text.params[k] for k in ("model", "hyperparameters", "target", "exclude_columns", "metric",
                                             "model_name", "cpu", "memory")}
    assert defaults == {"model": "text", "hyperparameters": {"C": 10.0}, "target": "label",
                        "exclude_columns": ["event_time"], "metric": "roc_auc", "model_name": "demo_moderation",
                        "cpu": "1", "memory": "2Gi"}
    assert "source_table" not in text.params  # the spec's SQL file names its own table
    assert text.template_searchpath == [str(REPO / "models")]
    assert text.get_task("extract").sql == "sql/demo_moderation.sql"
    assert text.timetable.timetable.expression == "30 3 * * *"
    # a version that passes the gate goes to the first level: its alias, its endpoint, its connection
    assert text.get_task("promote").aliases == ["development"]
    assert text.get_task("evaluate").alias == "development"
    deploy = text.get_task("deploy")
    assert (deploy.endpoint, deploy.target_conn_id) == ("demo-text", "ml_endpoint_demo_text")
    assert text.get_task("record_ledger").outlets[0].name == "endpoint.demo-text"
    text.params.validate()


def test_the_deploy_dag_picks_each_endpoints_target_and_connection_and_ledger(demo_dags):
    from airflow.sdk import AssetAlias
    from jinja2.nativetypes import NativeEnvironment

    from airflow.sdk.definitions.param import ParamsDict

    dag = demo_dags["demo_classifier__deploy"]
    assert dag.params.get_param("endpoint").schema["enum"] == ["demo-local", "demo-production"]
    deploy = dag.get_task("deploy")
    env = NativeEnvironment()
    for endpoint, conn_id in (("demo-local", "ml_endpoint_demo_local"), ("demo-production", "ml_endpoint_demo_production")):
        params = ParamsDict({"endpoint": endpoint})
        assert env.from_string(deploy.target_conn_id).render(params=params) == conn_id
        assert env.from_string(deploy.target).render(params=params) == "local"
    (ledger,) = dag.get_task("record_ledger").outlets
    assert isinstance(ledger, AssetAlias)  # the record goes on the asset of the endpoint really used
    assert {a.name for a in dag.get_task("resolve").inlets} == {"endpoint.demo-local", "endpoint.demo-production"}


def test_the_ledger_record_lands_on_the_endpoint_it_names(make_context):
    from airflow.sdk import AssetAlias

    from operators.deploy.ledger import RecordLedgerOperator

    alias = AssetAlias("m__deploy.ledger")
    op = RecordLedgerOperator(task_id="record_ledger", deploy_task_id="deploy", outlets=[alias])
    context = make_context()
    record = {"endpoint": "demo-production", "model": "m", "version": "3", "outcome": "deployed"}
    context["ti"] = mock.Mock(xcom_pull=mock.Mock(return_value=record))
    context["outlet_events"][alias] = mock.Mock()
    assert op.execute(context) == record
    (asset,), kwargs = context["outlet_events"][alias].add.call_args
    assert asset.name == "endpoint.demo-production" and kwargs == {"extra": record}


def test_the_scoring_dag_follows_batch_scoring(demo_dags):
    dag = demo_dags["demo_classifier__score"]
    assert dag.params["alias"] == "production" and dag.params["rows_per_shard"] == 100000
    assert dag.timetable.expression == "0 5 * * *"
    assert dag.get_task("extract").sql == "sql/demo_classifier.sql"


def test_a_missing_spec_says_what_to_write(tmp_path):
    with pytest.raises(SpecError, match=r"no spec for model 'ghost'.*write ghost.yaml there"):
        model_dags("ghost", folder=tmp_path)


BROKEN = {
    # file -> (what is written, the field the import error names, what it says)
    "unknown_key": ("retries: 3\n", "the file", "unknown key(s) ['retries']"),
    "no_sql": ("", "source.sql", "no SQL file"),
    "shared_endpoint": ("", "levels[0].endpoint", "endpoint 'demo-local' already serves model 'demo_classifier'"),
    "bad_class": ("", "model.class", "'torch' is not a model class this deployment allows"),
}


def _broken_spec(name: str) -> str:
    text = (REPO / "models" / "demo_classifier.yaml").read_text().replace("name: demo_classifier", f"name: {name}")
    slug = name.replace("_", "-")
    text = text.replace("endpoint: demo-local", f"endpoint: {slug}-dev").replace("demo-production", f"{slug}-prod")
    if name == "no_sql":
        text = text.replace("sql: sql/demo_classifier.sql\nmodel", "sql: sql/nowhere.sql\nmodel")
    if name == "shared_endpoint":
        text = text.replace(f"endpoint: {slug}-dev", "endpoint: demo-local")
    if name == "bad_class":
        text = text.replace("class: sklearn", "class: torch").replace("  estimator: HistGradientBoostingClassifier\n", "")
    return text + BROKEN[name][0]


def test_a_broken_spec_is_the_import_error_of_its_own_dag_file_alone(tmp_path):
    """A real DagBag over a DAG folder of stubs, as the DAG processor reads it."""
    specs, dags = tmp_path / "models", tmp_path / "dags"
    shutil.copytree(REPO / "models", specs, ignore=shutil.ignore_patterns("*.json"))
    for name in BROKEN:
        (specs / f"{name}.yaml").write_text(_broken_spec(name))
    written = write_dag_files(specs, dags)
    assert len(written) == 2 + len(BROKEN) and all(line.startswith("wrote") for line in written)
    (dags / "left_over.py").write_text(STUB.format(name="left_over"))
    assert write_dag_files(specs, dags) == [f"stale  {dags / 'left_over.py'}: no spec left_over.yaml is left; "
                                            f"delete the file"]
    (dags / "left_over.py").unlink()
    (dags / "no_sql.py").unlink()
    assert write_dag_files(specs, dags, write=False) == [
        f"error  {dags / 'no_sql.py'} is missing: models/no_sql.yaml has no DAGs until `make model-dags` writes it"]
    write_dag_files(specs, dags)
    code = f"""
import json
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder={str(dags)!r})
print(json.dumps({{"dags": sorted(bag.dags), "errors": bag.import_errors}}))
"""
    env = {**os.environ, "ML_MODEL_SPECS": str(specs)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen["dags"] == ["demo_classifier__deploy", "demo_classifier__score", "demo_classifier__train",
                            "demo_moderation__deploy", "demo_moderation__train"]
    assert sorted(Path(f).stem for f in seen["errors"]) == sorted(BROKEN)
    for file, error in seen["errors"].items():
        _, where, says = BROKEN[Path(file).stem]
        last = error.strip().splitlines()[-1]
        assert last.startswith("operators.specs.model_spec.SpecError: ") or last.startswith("SpecError: "), last
        assert f"{Path(file).stem}.yaml: {where}: " in last and says in last, last


def test_each_next_level_waits_for_evidence_then_moves_its_alias_and_deploys_its_endpoint(demo_dags):
    dag = demo_dags["demo_classifier__train"]
    evidence = dag.get_task("evidence_production")
    assert dag.get_task("deploy").downstream_task_ids >= {"evidence_production"}
    assert evidence.downstream_task_ids == {"promote_production"}
    assert evidence.lower["endpoint"] == "demo-local" and evidence.higher["endpoint"] == "demo-production"
    assert evidence.rules["min_requests"] == 200 and evidence.window_minutes == 30
    assert dag.get_task("promote_production").aliases == ["production"]
    deploy = dag.get_task("deploy_production")
    assert (deploy.endpoint, deploy.target_conn_id) == ("demo-production", "ml_endpoint_demo_production")
    assert deploy.downstream_task_ids == {"record_ledger_production", "fail_if_deploy_failed_production",
                                          "restore_aliases_production"}
    assert dag.get_task("record_ledger_production").outlets[0].name == "endpoint.demo-production"
    assert dag.get_task("restore_aliases_production").promote_task_id == "promote_production"


def test_a_level_may_ask_a_person_instead(tmp_path):
    from airflow.providers.standard.operators.hitl import ApprovalOperator

    shutil.copytree(REPO / "models" / "sql", tmp_path / "sql")
    text = (REPO / "models" / "demo_moderation.yaml").read_text()
    text = text[:text.index("    promotion:")] + "    promotion: {approval: true, window_minutes: 60}\n"
    (tmp_path / "demo_moderation.yaml").write_text(text)
    dag = model_dags("demo_moderation", folder=tmp_path)["demo_moderation__train"]
    approve = dag.get_task("approve_production")
    assert isinstance(approve, ApprovalOperator) and approve.response_timeout.total_seconds() == 3600
    assert approve.downstream_task_ids == {"promote_production"}
    assert "evidence_production" not in dag.task_ids


def test_promotion_on_labelled_feedback_checks_accuracy_after_the_evidence_and_needs_a_floor(tmp_path):
    from operators.deploy.feedback import FeedbackAccuracyOperator

    shutil.copytree(REPO / "models" / "sql", tmp_path / "sql")
    text = (REPO / "models" / "demo_moderation.yaml").read_text()
    (tmp_path / "demo_moderation.yaml").write_text(text.replace(
        "      window_minutes: 30", "      window_minutes: 30\n      feedback_table: reviewed_posts\n"
                                   "      accuracy_floor: 0.8"))
    dag = model_dags("demo_moderation", folder=tmp_path)["demo_moderation__train"]
    check = dag.get_task("feedback_production")
    assert isinstance(check, FeedbackAccuracyOperator)
    assert (check.table, check.floor, check.label_column, check.conn_id) == ("reviewed_posts", 0.8, "label", "ml_source")
    assert check.endpoint["endpoint"] == "demo-text"  # the level below answers the feedback rows
    assert dag.get_task("evidence_production").downstream_task_ids == {"feedback_production"}
    assert check.downstream_task_ids == {"promote_production"}
    (tmp_path / "demo_moderation.yaml").write_text(text.replace(
        "      window_minutes: 30", "      window_minutes: 30\n      feedback_table: reviewed_posts"))
    with pytest.raises(SpecError, match=r"accuracy_floor"):
        model_dags("demo_moderation", folder=tmp_path)


def test_each_levels_smoke_protocol_reaches_its_deploys_and_a_wrong_one_is_the_specs_error(tmp_path):
    from jinja2.nativetypes import NativeEnvironment

    from airflow.sdk.definitions.param import ParamsDict

    shutil.copytree(REPO / "models" / "sql", tmp_path / "sql")
    text = (REPO / "models" / "demo_moderation.yaml").read_text()
    text = text.replace("    endpoint: demo-text\n", "    endpoint: demo-text\n    smoke_protocol: grpc\n")
    text = text.replace("    endpoint: demo-text-production\n", "    endpoint: demo-text-production\n    smoke_protocol: v2\n")
    (tmp_path / "demo_moderation.yaml").write_text(text)
    dags = model_dags("demo_moderation", folder=tmp_path)
    train = dags["demo_moderation__train"]
    assert train.get_task("deploy").smoke_protocol == "grpc"
    assert train.get_task("deploy_production").smoke_protocol == "v2"
    deploy = dags["demo_moderation__deploy"].get_task("deploy")
    env = NativeEnvironment()
    rendered = {e: env.from_string(deploy.smoke_protocol).render(params=ParamsDict({"endpoint": e}))
                for e in ("demo-text", "demo-text-production")}
    assert rendered == {"demo-text": "grpc", "demo-text-production": "v2"}
    assert model_dags("demo_classifier")["demo_classifier__train"].get_task("deploy").smoke_protocol is None

    (tmp_path / "demo_moderation.yaml").write_text(text.replace("smoke_protocol: v2", "smoke_protocol: soap"))
    with pytest.raises(SpecError, match=r"levels\[1\]\.smoke_protocol.*soap"):
        model_dags("demo_moderation", folder=tmp_path)


def test_the_specs_data_checks_reach_the_check_against_production_and_a_wrong_rule_is_the_specs_error(tmp_path):
    shutil.copytree(REPO / "models" / "sql", tmp_path / "sql")
    text = (REPO / "models" / "demo_moderation.yaml").read_text()
    rules = "data_checks:\n  max_mean_shift: 1.0\n  columns:\n    text: {max_length: 5000}\n"
    (tmp_path / "demo_moderation.yaml").write_text(text + rules)
    check = model_dags("demo_moderation", folder=tmp_path)["demo_moderation__train"].get_task("check_data")
    assert check.rules == {"max_mean_shift": 1.0, "columns": {"text": {"max_length": 5000}}}
    assert check.aliases == ["production", "development"]  # the version in production first
    assert check.upstream_task_ids == {"extract", "wait_for_snapshot"} and check.downstream_task_ids == {"train"}

    (tmp_path / "demo_moderation.yaml").write_text(text + rules.replace("max_length", "longest"))
    with pytest.raises(SpecError, match=r"data_checks\.columns\.text.*longest"):
        model_dags("demo_moderation", folder=tmp_path)


def test_a_specs_monitoring_gives_its_monitor_dag_reading_its_feedback_sql_and_triggering_its_training(tmp_path):
    from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator

    from operators.monitoring.monitor_model import MonitorModelOperator

    shutil.copytree(REPO / "models" / "sql", tmp_path / "sql")
    (tmp_path / "sql" / "reviews.sql").write_text("SELECT request_id, verdict, reviewed_at AS labelled_at FROM reviews\n")
    text = (REPO / "models" / "demo_moderation.yaml").read_text()
    monitoring = ("monitoring:\n  lookback_days: 14\n  drift_threshold: 0.3\n  feedback:\n    sql: sql/reviews.sql\n"
                  "    label: verdict\n    metric: f1\n    floor: 0.75\n    retrain: true\n")
    (tmp_path / "demo_moderation.yaml").write_text(text + monitoring)
    dags = model_dags("demo_moderation", folder=tmp_path)
    dag = dags["demo_moderation__monitor"]
    monitor = dag.get_task("monitor")
    assert isinstance(monitor, MonitorModelOperator)
    assert (monitor.model_name, monitor.lookback_days, monitor.drift_threshold, monitor.metric, monitor.floor,
            monitor.label_column, monitor.feedback_conn_id, monitor.retrain) == (
        "demo_moderation", 14, 0.3, "f1", 0.75, "verdict", "ml_source", True)
    assert monitor.feedback_sql == "sql/reviews.sql" and dag.template_searchpath == [str(tmp_path)]
    assert monitor.capture_uri.endswith("/captures") and monitor.report_root.endswith("/monitoring")
    retrain = dag.get_task("retrain")
    assert isinstance(retrain, TriggerDagRunOperator) and retrain.trigger_dag_id == "demo_moderation__train"
    assert dag.get_task("wants_retraining").upstream_task_ids == {"monitor"}
    assert "monitoring" in dag.tags and "model:demo_moderation" in dag.tags
    assert "demo_moderation__monitor" not in model_dags("demo_moderation")  # only a spec that asks has one

    (tmp_path / "demo_moderation.yaml").write_text(text + monitoring.replace("sql/reviews.sql", "sql/gone.sql"))
    with pytest.raises(SpecError, match=r"monitoring\.feedback\.sql.*no SQL file"):
        model_dags("demo_moderation", folder=tmp_path)
    (tmp_path / "demo_moderation.yaml").write_text(text + monitoring.replace("metric: f1", "metric: roc_auc"))
    with pytest.raises(SpecError, match=r"monitoring\.feedback\.metric"):
        model_dags("demo_moderation", folder=tmp_path)
