"""ml_training_pipeline: the Airflow DAG of the training pipeline of the deployment's default model, set by the
environment (one model, one endpoint; a model spec in models/ gives each model its own:
docs/model-specs.md). The pipeline's steps: operators/pipelines/training.py.

Deployment settings come from the environment (read here, cheaply, at parse time); what a
person may change per run is a Param in the trigger form. Heavy libraries are imported
only inside the operators' execute methods.
"""

from __future__ import annotations

import os

from operators.deploy.steps import DEPLOY_TARGET, ENDPOINT, ENDPOINT_CONN_ID
from operators.pipelines.training import TrainingSettings, training_pipeline

dag = training_pipeline(TrainingSettings(
    dag_id="ml_training_pipeline",
    model_name=os.environ.get("ML_MODEL_NAME", "demo_classifier"),
    sql="sql/training_rows.sql",
    endpoint=ENDPOINT,
    deploy_target=DEPLOY_TARGET,
    endpoint_conn_id=ENDPOINT_CONN_ID,
    source_conn_id=os.environ.get("ML_SOURCE_CONN_ID", "ml_source"),
    # Where the rows come from: "sql" (any common-sql connection, ML_SOURCE_CONN_ID; rows stream
    # through the worker), or a warehouse that writes the snapshot itself: "redshift" (UNLOAD to S3)
    # or "bigquery" (export job to GCS); ML_ARTIFACT_ROOT must then be on that cloud's store.
    extract_from=os.environ.get("ML_EXTRACT_FROM", "sql"),
    # Where the trainer runs: "local" (a subprocess of the worker), "kubernetes" (a
    # KubernetesPodOperator pod), "sagemaker" (a SageMaker training job) or "vertex" (a Vertex AI
    # CustomJob), the last three running ML_TRAINER_IMAGE. One setting, read at parse time: they
    # are different operator classes.
    compute=os.environ.get("ML_TRAIN_COMPUTE", "local"),
    schedule=os.environ.get("ML_PIPELINE_SCHEDULE", "0 3 * * *"),
    catchup=os.environ.get("ML_PIPELINE_CATCHUP", "false").lower() == "true",
))
