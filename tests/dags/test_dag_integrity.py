"""Every DAG file imports cleanly, has no cycle, retries every task, and stays light to parse."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

DAGS = Path(__file__).resolve().parents[2] / "dags"
HEAVY = ["sklearn", "pandas", "mlflow", "pyarrow", "boto3", "botocore", "kubernetes", "google.cloud",
         "adbc_driver_postgresql", "skops", "scipy"]


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS))


def test_no_import_errors(dagbag):
    assert dagbag.import_errors == {}
    assert "ml_training_pipeline" in dagbag.dags


def test_no_cycles_and_every_task_retries(dagbag):
    for dag_id, dag in dagbag.dags.items():
        order = [t.task_id for t in dag.topological_sort()]  # raises on a cycle
        assert len(order) == len(dag.tasks)
        for task in dag.tasks:
            exempt = getattr(task, "no_retry_reason", None)  # deliberate, and says why
            assert task.retries >= 1 or exempt, f"{dag_id}.{task.task_id} has no retries"
            if exempt:
                assert task.retries == 0


def test_training_pipeline_shape_schedule_and_params(dagbag):
    dag = dagbag.dags["ml_training_pipeline"]
    order = [t.task_id for t in dag.topological_sort()]
    assert order[:8] == ["extract", "wait_for_snapshot", "check_data", "train", "wait_for_model", "register",
                         "evaluate", "gate"]
    check = dag.get_task("check_data")
    assert check.aliases == ["production"] and check.rules is None  # the defaults, against production's snapshot
    assert set(order[8:]) == {"promote", "keep_production", "deploy_or_not", "deploy", "skip_deploy",
                              "record_ledger", "fail_if_deploy_failed", "restore_aliases"}
    # The gate decides promotion; Param `deploy` only decides whether the promoted version is deployed.
    assert dag.get_task("gate").downstream_task_ids == {"promote", "keep_production"}
    assert dag.get_task("promote").downstream_task_ids == {"deploy_or_not"}
    assert dag.get_task("deploy_or_not").downstream_task_ids == {"deploy", "skip_deploy"}
    assert dag.get_task("deploy").downstream_task_ids == {"record_ledger", "fail_if_deploy_failed", "restore_aliases"}
    assert dag.get_task("restore_aliases").trigger_rule == "all_failed"  # a failed deploy puts the alias back
    assert dag.get_task("record_ledger").trigger_rule == "all_done"
    assert dag.get_task("fail_if_deploy_failed").trigger_rule == "one_failed"
    # cron (backfills get real data intervals) or a published training snapshot
    assert type(dag.timetable).__name__ == "AssetOrTimeSchedule"
    assert type(dag.timetable.timetable).__name__ == "CronDataIntervalTimetable"
    assert dag.timetable.asset_condition.name == "demo_classifier.training_snapshots"
    assert dag.get_task("extract").published_asset == "demo_classifier.training_snapshots"
    assert dag.max_active_runs == 1
    for task_id in ("wait_for_snapshot", "wait_for_model"):
        assert dag.get_task(task_id).deferrable
    params = dag.params
    params.validate()  # defaults satisfy their own schemas
    assert {"estimator", "hyperparameters", "test_fraction", "metric", "direction", "margin"} <= set(params.keys())
    from airflow.sdk.exceptions import ParamValidationError

    with pytest.raises(ParamValidationError):
        params.get_param("test_fraction").resolve(0.9)
    with pytest.raises(ParamValidationError):
        params.get_param("estimator").resolve("os.system")
    train = dag.get_task("train")
    assert train.retry_exponential_backoff and train.max_retry_delay


def test_every_task_alerts_slack_on_failure_except_the_watcher_that_reports_one(dagbag):
    from operators.alerts import SlackAlert

    for dag_id, dag in dagbag.dags.items():
        for task in dag.tasks:
            callbacks = task.on_failure_callback or []
            callbacks = callbacks if isinstance(callbacks, list) else [callbacks]
            if task.task_id.startswith("fail_if_deploy_failed"):
                assert not callbacks
            else:
                assert [type(c) for c in callbacks] == [SlackAlert], f"{dag_id}.{task.task_id}"


def test_batch_scoring_maps_shards_with_a_bound(dagbag):
    dag = dagbag.dags["ml_batch_scoring"]
    assert [t.task_id for t in dag.topological_sort()] == ["extract", "plan", "score", "commit"]
    assert dag.get_task("extract").skip_when_empty  # a day without rows skips, not fails, the cron run
    assert not dagbag.dags["ml_training_pipeline"].get_task("extract").skip_when_empty  # no rows: nothing to train
    score = dag.get_task("score")
    assert type(score).__name__ == "MappedOperator" and score.max_active_tis_per_dagrun == 2
    assert type(dag.timetable).__name__ == "CronDataIntervalTimetable"


def test_deploy_dag_reads_the_ledger_and_records_to_it(dagbag):
    dag = dagbag.dags["ml_deploy"]
    (ledger,) = dag.get_task("record_ledger").outlets
    assert ledger in dag.get_task("resolve").inlets
    assert dag.params.get_param("action").schema["enum"] == ["deploy", "rollback"]
    deploy = dag.get_task("deploy")
    assert deploy.endpoint == "{{ params.endpoint }}"  # the Param is what the deploy uses
    assert ledger.name == "endpoint." + dag.params.get_param("endpoint").schema["enum"][0]


def test_assets_are_named_at_run_time_from_the_same_values_as_the_paths(dagbag):
    """Outlets are aliases; the task names the asset from the rendered Param, like its paths."""
    from airflow.sdk import AssetAlias

    dag = dagbag.dags["ml_training_pipeline"]
    extract, register = dag.get_task("extract"), dag.get_task("register")
    assert all(isinstance(o, AssetAlias) for o in (*extract.outlets, *register.outlets))
    assert extract.asset_name == "{{ params.model_name }}.snapshots" and "{{ params.model_name }}" in extract.snapshot_root
    assert register.asset_name == "{{ params.model_name }}.registered"


def _modules_after(code: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", code + "\nimport sys, json; print(json.dumps(sorted(sys.modules)))"],
                         capture_output=True, text=True, check=True, cwd=DAGS.parent)
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


@pytest.mark.parametrize("dag_file", sorted(str(p.relative_to(DAGS)) for p in DAGS.rglob("*.py")))
def test_dag_file_imports_no_heavy_library(dag_file):
    baseline = _modules_after("import airflow.sdk")
    loaded = _modules_after(f"import runpy; runpy.run_path({str(DAGS / dag_file)!r})")
    heavy = sorted(m for m in loaded - baseline if m.split(".")[0] in HEAVY or m.startswith("google.cloud"))
    assert heavy == [], f"{dag_file} pulls heavy modules at parse time: {heavy[:10]}"


def test_kubernetes_compute_makes_the_train_task_a_deferrable_pod_operator():
    """ML_TRAIN_COMPUTE=kubernetes is the one setting; the Params still size the pod."""
    code = """
import os, runpy, json
os.environ["ML_TRAIN_COMPUTE"] = "kubernetes"
os.environ["ML_TRAINER_IMAGE"] = "registry.example/ml-trainer:1.2.3"
dag = runpy.run_path("dags/ml_training_pipeline.py")["dag"]
train = dag.get_task("train")
from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
print(json.dumps({"kpo": isinstance(train, KubernetesPodOperator), "cls": type(train).__name__,
                  "deferrable": train.deferrable, "image": train.image, "namespace": train.namespace,
                  "resources": train.compute_resources, "retries": train.retries}))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=DAGS.parent, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    facts = json.loads(out.stdout.strip().splitlines()[-1])
    assert facts == {"kpo": True, "cls": "KubernetesTrainOperator", "deferrable": True,
                     "image": "registry.example/ml-trainer:1.2.3", "namespace": "ml", "retries": 2,
                     "resources": {"cpu": "{{ params.cpu }}", "memory": "{{ params.memory }}",
                                   "gpu": "{{ params.gpu }}"}}


@pytest.mark.parametrize("env,facts", [
    ({"ML_TRAIN_COMPUTE": "sagemaker", "ML_TRAINER_IMAGE": "1.dkr.ecr.us-east-1.amazonaws.com/ml-trainer:1",
      "ML_SAGEMAKER_ROLE_ARN": "arn:aws:iam::1:role/train", "ML_EXTRACT_FROM": "redshift",
      "ML_REDSHIFT_IAM_ROLE": "arn:aws:iam::1:role/unload", "ML_REDSHIFT_CLUSTER": "ml"},
     {"train": "SageMakerTrainOperator", "extract": "RedshiftToParquetOperator", "deferrable": True}),
    ({"ML_TRAIN_COMPUTE": "vertex", "ML_TRAINER_IMAGE": "europe-docker.pkg.dev/p/ml/ml-trainer:1",
      "ML_GCP_PROJECT": "p", "ML_EXTRACT_FROM": "bigquery"},
     {"train": "VertexTrainOperator", "extract": "BigQueryToParquetOperator", "deferrable": True}),
])
def test_cloud_compute_and_warehouse_source_are_one_setting_each(env, facts):
    """ML_TRAIN_COMPUTE and ML_EXTRACT_FROM pick the operator classes; the rest of the DAG is unchanged."""
    code = f"""
import os, runpy, json
os.environ.update({env!r})
dag = runpy.run_path("dags/ml_training_pipeline.py")["dag"]
train, extract = dag.get_task("train"), dag.get_task("extract")
print(json.dumps({{"train": type(train).__name__, "extract": type(extract).__name__, "deferrable": train.deferrable}}))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=DAGS.parent, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == facts


def test_each_kind_of_work_goes_to_its_celery_queue(dagbag):
    """Training, scoring and deploys each on their queue in every DAG (the built-in ones and each
    model spec's), everything else on Airflow's default queue: what the workers subscribe to."""
    kinds = {"training": set(), "scoring": set(), "deploy": set(), "default": set()}
    for dag_id, dag in dagbag.dags.items():
        for task in dag.tasks:
            kinds.setdefault(task.queue, set()).add(f"{dag_id}.{task.task_id}")
            if task.task_id == "train":
                assert task.queue == "training", f"{dag_id}.train is on {task.queue}"
            elif task.task_id == "score":
                assert task.queue == "scoring", f"{dag_id}.score is on {task.queue}"
            elif type(task).__name__ == "DeployModelOperator" or dag_id.endswith("deploy"):
                assert task.queue == "deploy", f"{dag_id}.{task.task_id} is on {task.queue}"
            else:
                assert task.queue == "default", f"{dag_id}.{task.task_id} is on {task.queue}"
    assert set(kinds) == {"training", "scoring", "deploy", "default"} and all(kinds.values()), kinds
