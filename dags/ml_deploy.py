"""ml_deploy: deploy a model version (or the version behind an alias) to the endpoint, or roll
back. Rolling back without a version returns to the version served before the current one,
as recorded in the endpoint's ledger (its asset events)."""

from __future__ import annotations

import os

import pendulum
from airflow.sdk import DAG, Param, task

from operators.alerts import task_failure_alert
from operators.deploy.steps import ENDPOINT, deploy_steps, endpoint_asset

MODEL_NAME = os.environ.get("ML_MODEL_NAME", "demo_classifier")

with DAG(
    dag_id="ml_deploy",
    description=f"Deploy or roll back a registered model on endpoint {ENDPOINT}",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args={
        "on_failure_callback": task_failure_alert(),  # Slack, when ML_SLACK_CONN_ID exists
        "retries": 1},
    params={
        "model": Param(MODEL_NAME, type="string", description="registered model name"),
        "version": Param(None, type=["null", "string"], description="version to deploy (or give an alias)"),
        "alias": Param(None, type=["null", "string"], description="alias to deploy, e.g. production"),
        "endpoint": Param(ENDPOINT, enum=[ENDPOINT], description="endpoint (its ledger is endpoint.<name>; "
                                                                 "set by ML_ENDPOINT)"),
        "action": Param("deploy", enum=["deploy", "rollback"]),
        "canary_percent": Param(None, type=["null", "integer"], minimum=1, maximum=100,
                                description="share the new version takes first beside the serving one (kubernetes, "
                                            "sagemaker, vertex); empty: the endpoint's setting"),
    },
    tags=["ml", "deploy"],
) as dag:

    @task(task_id="resolve", inlets=[endpoint_asset()])
    def resolve(params=None, inlet_events=None) -> dict:
        """What to deploy: the given version/alias, or for a rollback the ledger's previous version."""
        from airflow.sdk.exceptions import AirflowFailException

        from operators.deploy.ledger import version_before_current

        if params["action"] == "deploy" or params["version"]:
            if not (params["version"] or params["alias"]):
                raise AirflowFailException("give a version or an alias to deploy")
            return {"version": params["version"], "alias": None if params["version"] else params["alias"],
                    "reason": params["action"]}
        events = sorted(inlet_events[endpoint_asset()], key=lambda e: e.timestamp)
        ledger = [e.extra for e in events if e.extra.get("model") == params["model"]]
        previous = version_before_current(ledger)
        if previous is None:
            raise AirflowFailException(f"the ledger of {params['endpoint']} has no earlier version of "
                                       f"{params['model']} to roll back to ({len(ledger)} entries); give a version")
        print(f"rollback: the ledger says {previous} served before the current version")
        return {"version": previous, "alias": None, "reason": "rollback (from the ledger)"}

    target = resolve()
    deploy, record_ledger, watcher = deploy_steps(
        model_name="{{ params.model }}", version=target["version"], alias=target["alias"],
        endpoint="{{ params.endpoint }}", reason=target["reason"],  # the ledger records the run id too
        canary_percent="{{ params.canary_percent }}",
    )
