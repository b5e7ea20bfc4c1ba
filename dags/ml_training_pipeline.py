"""ml_training_pipeline: extract -> wait for snapshot -> train -> wait for model -> register.

Deployment settings come from the environment (read here, cheaply, at parse time); what a
person may change per run is a Param in the trigger form. Heavy libraries are imported
only inside the operators' execute methods.
"""

from __future__ import annotations

import os
from datetime import timedelta

import pendulum
from airflow.sdk import DAG, Asset, CronDataIntervalTimetable, Param, chain

from ml.training_config import ESTIMATORS
from operators.artifact_sensor import ArtifactSensor
from operators.register_model import RegisterModelOperator
from operators.sql_to_parquet import SqlToParquetOperator
from operators.train_model import COMPUTES, TrainModelOperator

ARTIFACT_ROOT = os.environ.get("ML_ARTIFACT_ROOT", f"file://{os.environ.get('AIRFLOW_HOME', '/tmp')}/ml-artifacts")
SOURCE_CONN_ID = os.environ.get("ML_SOURCE_CONN_ID", "ml_source")
MODEL_NAME = os.environ.get("ML_MODEL_NAME", "demo_classifier")
SCHEDULE = os.environ.get("ML_PIPELINE_SCHEDULE", "0 3 * * *")
CATCHUP = os.environ.get("ML_PIPELINE_CATCHUP", "false").lower() == "true"
KUBERNETES = {
    "image": os.environ.get("ML_TRAINER_IMAGE", "ml-trainer:0.1.0"),
    "namespace": os.environ.get("ML_K8S_NAMESPACE", "ml"),
    "cpu": "{{ params.cpu }}",
    "memory": "{{ params.memory }}",
    "gpu": "{{ params.gpu }}",
    "service_account_name": os.environ.get("ML_K8S_SERVICE_ACCOUNT") or None,
    "env_from_secrets": [s for s in os.environ.get("ML_K8S_ENV_SECRETS", "").split(",") if s],
}

# What the upstream task produced (its XCom return value), rendered at run time.
SNAPSHOT_URI = "{{ ti.xcom_pull(task_ids='extract')['uri'] }}"
MODEL_URI = "{{ ti.xcom_pull(task_ids='train')['model_uri'] }}"

snapshots = Asset(name=f"{MODEL_NAME}.snapshots", uri=f"{ARTIFACT_ROOT}/snapshots/{MODEL_NAME}")
registered = Asset(name=f"{MODEL_NAME}.registered", uri=f"{ARTIFACT_ROOT}/models/{MODEL_NAME}")

with DAG(
    dag_id="ml_training_pipeline",
    description="Extract training rows, train a scikit-learn model, register it in MLflow",
    schedule=CronDataIntervalTimetable(SCHEDULE, timezone="UTC"),
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=CATCHUP,
    max_active_runs=1,
    render_template_as_native_obj=True,  # Params keep their JSON types inside templated dicts
    default_args={
        "retries": 2,
        "retry_delay": timedelta(seconds=30),
        "retry_exponential_backoff": 2.0,
        "max_retry_delay": timedelta(minutes=10),
    },
    params={
        "estimator": Param("HistGradientBoostingClassifier", enum=sorted(ESTIMATORS), description="scikit-learn estimator"),
        "hyperparameters": Param({"max_iter": 100, "learning_rate": 0.1}, type="object",
                                 description="estimator parameters, as JSON"),
        "target": Param("target", type="string", description="column to predict"),
        "exclude_columns": Param(["event_time"], type="array", description="columns that are not features"),
        "test_fraction": Param(0.2, type="number", minimum=0.05, maximum=0.5, description="held-out share"),
        "seed": Param(42, type="integer", description="seed of the split and the estimator"),
        "compute": Param("local", enum=list(COMPUTES), description="where the trainer runs"),
        "cpu": Param("1", type="string", description="kubernetes: CPU request"),
        "memory": Param("2Gi", type="string", description="kubernetes: memory request and limit"),
        "gpu": Param(0, type="integer", minimum=0, description="kubernetes: nvidia.com/gpu count"),
        "model_name": Param(MODEL_NAME, type="string", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$"),
        "source_table": Param("demo_training_rows", type="string", pattern=r"^[A-Za-z_][A-Za-z0-9_.]*$"),
    },
    tags=["ml", "training"],
) as dag:
    extract = SqlToParquetOperator(
        task_id="extract",
        conn_id=SOURCE_CONN_ID,
        sql="sql/training_rows.sql",
        snapshot_root=ARTIFACT_ROOT + "/snapshots/{{ params.model_name }}",
        outlets=[snapshots],
    )
    wait_for_snapshot = ArtifactSensor(
        task_id="wait_for_snapshot", uri=SNAPSHOT_URI, kind="snapshot", poke_interval=10, timeout=3600
    )
    train = TrainModelOperator(
        task_id="train",
        data_uri=SNAPSHOT_URI,
        output_uri=ARTIFACT_ROOT + "/models/{{ params.model_name }}/{{ ti.xcom_pull(task_ids='extract')['partition'] }}",
        config={
            "estimator": "{{ params.estimator }}",
            "params": "{{ params.hyperparameters }}",
            "target": "{{ params.target }}",
            "exclude": "{{ params.exclude_columns }}",
            "test_fraction": "{{ params.test_fraction }}",
            "seed": "{{ params.seed }}",
        },
        compute="{{ params.compute }}",
        kubernetes=KUBERNETES,
        execution_timeout=timedelta(hours=4),
    )
    wait_for_model = ArtifactSensor(
        task_id="wait_for_model", uri=MODEL_URI, kind="model", poke_interval=10, timeout=3600
    )
    register = RegisterModelOperator(
        task_id="register", model_uri=MODEL_URI, model_name="{{ params.model_name }}",
        outlets=[registered],
    )
    chain(extract, wait_for_snapshot, train, wait_for_model, register)
