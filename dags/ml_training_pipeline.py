"""ml_training_pipeline: extract -> wait for snapshot -> train -> wait for model -> register
-> evaluate (candidate vs production, same held-out rows) -> gate -> promote (move the
production alias) -> deploy if Param ``deploy`` (wait, smoke test, automatic rollback), with
every deploy in the ledger; a failed deploy puts the alias back. Task results travel as
XComArgs (``task.output[...]``).

Deployment settings come from the environment (read here, cheaply, at parse time); what a
person may change per run is a Param in the trigger form. Heavy libraries are imported
only inside the operators' execute methods.
"""

from __future__ import annotations

import json
import os
from datetime import timedelta

import pendulum
from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.sdk import DAG, AssetAlias, AssetOrTimeSchedule, CronDataIntervalTimetable, Param, chain, task

from ml.models.classes import choices as model_choices
from ml.training_config import ESTIMATORS
from operators.alerts import task_failure_alert
from operators.artifact_root import artifact_root
from operators.sensors.artifact_sensor import ArtifactSensor
from operators.deploy.steps import ENDPOINT, deploy_steps
from operators.training.evaluate_model import DIRECTIONS, EvaluateModelOperator
from operators.registry.promote_model import PromoteModelOperator, RestoreAliasesOperator
from operators.extract.published_snapshots import training_snapshots_asset
from operators.registry.register_model import RegisterModelOperator
from operators.extract.sql_to_parquet import extract_operator
from operators.training.train_model import training_operator

ARTIFACT_ROOT = artifact_root()
SOURCE_CONN_ID = os.environ.get("ML_SOURCE_CONN_ID", "ml_source")
MODEL_NAME = os.environ.get("ML_MODEL_NAME", "demo_classifier")
SCHEDULE = os.environ.get("ML_PIPELINE_SCHEDULE", "0 3 * * *")
CATCHUP = os.environ.get("ML_PIPELINE_CATCHUP", "false").lower() == "true"
# Where the trainer runs: "local" (a subprocess of the worker), "kubernetes" (a
# KubernetesPodOperator pod), "sagemaker" (a SageMaker training job) or "vertex" (a Vertex AI
# CustomJob), the last three running ML_TRAINER_IMAGE. One setting, read at parse time: they
# are different operator classes.
COMPUTE = os.environ.get("ML_TRAIN_COMPUTE", "local")
KUBERNETES = {
    "image": os.environ.get("ML_TRAINER_IMAGE", "ml-trainer:0.1.0"),
    "namespace": os.environ.get("ML_K8S_NAMESPACE", "ml"),
    "kubernetes_conn_id": os.environ.get("ML_K8S_CONN_ID", "kubernetes_default"),
    "compute_resources": {"cpu": "{{ params.cpu }}", "memory": "{{ params.memory }}", "gpu": "{{ params.gpu }}"},
    "service_account_name": os.environ.get("ML_K8S_SERVICE_ACCOUNT") or None,
    "env_from_secrets": [s for s in os.environ.get("ML_K8S_ENV_SECRETS", "").split(",") if s],
    # Kubernetes-shaped JSON lists, e.g. a PVC or hostPath holding a file:// artifact store
    "volumes": json.loads(os.environ.get("ML_K8S_VOLUMES") or "[]"),
    "volume_mounts": json.loads(os.environ.get("ML_K8S_VOLUME_MOUNTS") or "[]"),
}

SAGEMAKER = {
    "image": os.environ.get("ML_TRAINER_IMAGE", ""),
    "role_arn": os.environ.get("ML_SAGEMAKER_ROLE_ARN", ""),
    "instance_type": os.environ.get("ML_SAGEMAKER_TRAIN_INSTANCE", "ml.m5.xlarge"),
    "aws_conn_id": os.environ.get("ML_AWS_CONN_ID", "aws_default"),
    "region_name": os.environ.get("ML_AWS_REGION") or None,
}
VERTEX = {
    "image": os.environ.get("ML_TRAINER_IMAGE", ""),
    "project_id": os.environ.get("ML_GCP_PROJECT", ""),
    "region": os.environ.get("ML_VERTEX_REGION", "us-central1"),
    "machine_type": os.environ.get("ML_VERTEX_MACHINE_TYPE", "n1-standard-4"),
    "service_account": os.environ.get("ML_VERTEX_SERVICE_ACCOUNT") or None,
    "gcp_conn_id": os.environ.get("ML_GCP_CONN_ID", "google_cloud_default"),
}

# Where the rows come from: "sql" (any common-sql connection, ML_SOURCE_CONN_ID; rows stream
# through the worker), or a warehouse that writes the snapshot itself: "redshift" (UNLOAD to S3)
# or "bigquery" (export job to GCS); ML_ARTIFACT_ROOT must then be on that cloud's store.
EXTRACT_FROM = os.environ.get("ML_EXTRACT_FROM", "sql")
REDSHIFT = {
    "iam_role": os.environ.get("ML_REDSHIFT_IAM_ROLE", ""),
    "database": os.environ.get("ML_REDSHIFT_DATABASE", "dev"),
    "cluster_identifier": os.environ.get("ML_REDSHIFT_CLUSTER") or None,
    "workgroup_name": os.environ.get("ML_REDSHIFT_WORKGROUP") or None,
    "db_user": os.environ.get("ML_REDSHIFT_DB_USER") or None,
    "secret_arn": os.environ.get("ML_REDSHIFT_SECRET_ARN") or None,
    "aws_conn_id": os.environ.get("ML_AWS_CONN_ID", "aws_default"),
    "region_name": os.environ.get("ML_AWS_REGION") or None,
}
BIGQUERY = {
    "project_id": os.environ.get("ML_GCP_PROJECT", ""),
    "scratch_dataset": os.environ.get("ML_BIGQUERY_SCRATCH_DATASET", "ml_scratch"),
    "location": os.environ.get("ML_BIGQUERY_LOCATION") or None,
    "gcp_conn_id": os.environ.get("ML_GCP_CONN_ID", "google_cloud_default"),
}

RETRY_DELAY = timedelta(seconds=float(os.environ.get("ML_RETRY_DELAY_SECONDS", "30")))

# Assets are named at run time from the same rendered values as the paths (see
# operators/asset_events.py): a run for another model records events on that model's assets.
snapshot_events = AssetAlias("ml_training_pipeline.snapshots")
registered_events = AssetAlias("ml_training_pipeline.registered")
# Data-aware retraining: a snapshot published on this asset starts a run that trains on it
# (operators/extract/published_snapshots.py); the cron schedule runs as well.
published_snapshots = training_snapshots_asset(MODEL_NAME)

with DAG(
    dag_id="ml_training_pipeline",
    description="Extract training rows, train a model, register, evaluate, promote and deploy it",
    schedule=AssetOrTimeSchedule(timetable=CronDataIntervalTimetable(SCHEDULE, timezone="UTC"),
                                 assets=published_snapshots),
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=CATCHUP,
    max_active_runs=1,
    render_template_as_native_obj=True,  # Params keep their JSON types inside templated dicts
    default_args={
        "on_failure_callback": task_failure_alert(),  # Slack, when ML_SLACK_CONN_ID exists
        "retries": 2,
        "retry_delay": RETRY_DELAY,
        "retry_exponential_backoff": 2.0,
        "max_retry_delay": timedelta(minutes=10),
    },
    params={
        # only the classes this deployment allows (built-ins and ML_MODEL_CLASSES): never an import path
        "model": Param("sklearn", enum=model_choices(),
                       description="model class: sklearn (tabular), text (text classifier), or one this deployment "
                                   "allows with ML_MODEL_CLASSES (docs/custom-models.md)"),
        "estimator": Param("HistGradientBoostingClassifier", enum=sorted(ESTIMATORS),
                           description="the sklearn model's scikit-learn estimator (other models ignore it)"),
        "hyperparameters": Param({"max_iter": 100, "learning_rate": 0.1}, type="object",
                                 description="the model's parameters, as JSON (sklearn: the estimator's)"),
        "target": Param("target", type="string", description="column to predict"),
        "exclude_columns": Param(["event_time"], type="array", description="columns that are not features"),
        "test_fraction": Param(0.2, type="number", minimum=0.05, maximum=0.5, description="held-out share"),
        "seed": Param(42, type="integer", description="seed of the split and the estimator"),
        "cpu": Param("1", type="string", description="kubernetes: CPU request"),
        "memory": Param("2Gi", type="string", description="kubernetes: memory request and limit"),
        "gpu": Param(0, type="integer", minimum=0, description="kubernetes: nvidia.com/gpu count"),
        "model_name": Param(MODEL_NAME, type="string", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$"),
        "source_table": Param("demo_training_rows", type="string", pattern=r"^[A-Za-z_][A-Za-z0-9_.]*$"),
        "metric": Param("accuracy", enum=["accuracy", "f1", "roc_auc", "rmse", "mae", "r2"],
                        description="metric the gate compares"),
        "direction": Param("maximize", enum=list(DIRECTIONS)),
        "margin": Param(0.0, type="number", minimum=0, description="promote only if better by at least this"),
        "deploy": Param(True, type="boolean",
                        description=f"deploy a promoted version to endpoint {ENDPOINT} (the gate decides promotion)"),
        "canary_percent": Param(None, type=["null", "integer"], minimum=1, maximum=100,
                                description="share the new version takes first beside the serving one (kubernetes, "
                                            "sagemaker, vertex); empty: the endpoint's setting"),
    },
    tags=["ml", "training"],
) as dag:
    extract = extract_operator(
        EXTRACT_FROM,
        redshift=REDSHIFT,
        bigquery=BIGQUERY,
        task_id="extract",
        conn_id=SOURCE_CONN_ID,
        sql="sql/training_rows.sql",
        snapshot_root=ARTIFACT_ROOT + "/snapshots/{{ params.model_name }}",
        asset_name="{{ params.model_name }}.snapshots",
        outlets=[snapshot_events],
        published_asset=published_snapshots.name,
        model_name="{{ params.model_name }}",
    )
    wait_for_snapshot = ArtifactSensor(
        task_id="wait_for_snapshot", uri=extract.output["uri"], kind="snapshot", poke_interval=10, timeout=3600
    )
    train = training_operator(
        COMPUTE,
        kubernetes=KUBERNETES,
        sagemaker=SAGEMAKER,
        vertex=VERTEX,
        task_id="train",
        data_uri=extract.output["uri"],
        output_root=ARTIFACT_ROOT + "/models/{{ params.model_name }}",  # + the snapshot's partition
        config={
            "model": "{{ params.model }}",
            "estimator": "{{ params.estimator if params.model == 'sklearn' else None }}",
            "params": "{{ params.hyperparameters }}",
            "target": "{{ params.target }}",
            "exclude": "{{ params.exclude_columns }}",
            "test_fraction": "{{ params.test_fraction }}",
            "seed": "{{ params.seed }}",
        },
        execution_timeout=timedelta(hours=4),
    )
    wait_for_model = ArtifactSensor(
        task_id="wait_for_model", uri=train.output["model_uri"], kind="model", poke_interval=10, timeout=3600
    )
    register = RegisterModelOperator(
        task_id="register", model_uri=train.output["model_uri"], model_name="{{ params.model_name }}",
        asset_name="{{ params.model_name }}.registered", outlets=[registered_events],
    )
    evaluate = EvaluateModelOperator(
        task_id="evaluate", model_name="{{ params.model_name }}", version=register.output["version"],
        alias="production", metric="{{ params.metric }}", direction="{{ params.direction }}",
        margin="{{ params.margin }}",
    )

    @task.branch(task_id="gate")
    def gate(verdict: dict) -> str:
        """Promote only a candidate that beats production by the margin."""
        print(f"gate: {verdict['metric']} candidate={verdict['candidate'][verdict['metric']]:.4f} "
              f"production={verdict['champion'][verdict['metric']] if verdict['champion'] else None} "
              f"-> {'promote' if verdict['promote'] else 'keep'}: {verdict['reason']}")
        return "promote" if verdict["promote"] else "keep_production"

    promote = PromoteModelOperator(task_id="promote", model_name="{{ params.model_name }}",
                                   version=register.output["version"], aliases=["production"])
    keep_production = EmptyOperator(task_id="keep_production")

    @task.branch(task_id="deploy_or_not")
    def deploy_or_not(params=None) -> str:
        """The promoted version goes to the endpoint when Param ``deploy`` is on."""
        return "deploy" if params["deploy"] else "skip_deploy"

    deploy, record_ledger, watcher = deploy_steps(
        model_name="{{ params.model_name }}", version=register.output["version"],
        reason="deploy after training run {{ run_id }}", canary_percent="{{ params.canary_percent }}")
    skip_deploy = EmptyOperator(task_id="skip_deploy")
    # only when the deploy failed: the registry must not call a refused version "production"
    restore_aliases = RestoreAliasesOperator(task_id="restore_aliases", model_name="{{ params.model_name }}",
                                             promote_task_id="promote")
    deploy >> restore_aliases
    chain(extract, wait_for_snapshot, train, wait_for_model, register, evaluate, gate(evaluate.output),
          [promote, keep_production])
    chain(promote, deploy_or_not(), [deploy, skip_deploy])
