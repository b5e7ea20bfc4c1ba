"""ml_deploy (an Airflow DAG): deploy a model version (or the version behind an alias) to the deployment's
endpoint (ML_ENDPOINT), or roll back; a model spec in models/ gives each model its own
``<model>__deploy`` over its levels' endpoints. The steps: operators/pipelines/deploy.py."""

from __future__ import annotations

import os

from operators.deploy.steps import DEPLOY_TARGET, ENDPOINT, ENDPOINT_CONN_ID
from operators.pipelines.deploy import DeploySettings, Endpoint, deploy_dag

dag = deploy_dag(DeploySettings(
    dag_id="ml_deploy",
    model_name=os.environ.get("ML_MODEL_NAME", "demo_classifier"),
    endpoints=[Endpoint(ENDPOINT, DEPLOY_TARGET, ENDPOINT_CONN_ID)],
    endpoint_help="; set by ML_ENDPOINT",
))
