"""Deploy a model version (or the version behind an alias) to one of the model's endpoints, or
roll back. Rolling back without a version returns to the version served before the current one,
as recorded in that endpoint's ledger (its asset events)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Endpoint:
    name: str
    target: str | None  # local, kubernetes, sagemaker, vertex; None: the connection's extra or local
    conn_id: str
    smoke_protocol: str | None = None  # invocations, v2, grpc; None: ML_DEPLOY_SMOKE_PROTOCOL, else invocations


@dataclass(frozen=True)
class DeploySettings:
    dag_id: str
    model_name: str
    endpoints: list[Endpoint]  # the first is the default
    slack_conn_id: str | None = None
    owner: str | None = None  # default_args owner: the spec's owners
    tags: list[str] = field(default_factory=lambda: ["ml", "deploy"])
    endpoint_help: str = ""  # how the endpoints are chosen, for the Param's description
    fileloc: str | None = None


def deploy_dag(s: DeploySettings):
    import sys

    import pendulum
    from airflow.sdk import DAG, AssetAlias, Param, task

    from operators.alerts import task_failure_alert
    from operators.deploy.steps import deploy_steps, endpoint_asset
    from operators.registry.promote_model import PromoteModelOperator
    from operators.workers import queue

    names = [e.name for e in s.endpoints]
    if len(s.endpoints) == 1:
        target, conn_id, ledger = s.endpoints[0].target, s.endpoints[0].conn_id, None
        smoke = s.endpoints[0].smoke_protocol
    else:  # the run's endpoint picks its target and connection
        target = "{{ %r[params.endpoint] }}" % {e.name: e.target or "" for e in s.endpoints}
        conn_id = "{{ %r[params.endpoint] }}" % {e.name: e.conn_id for e in s.endpoints}
        ledger = [AssetAlias(f"{s.dag_id}.ledger")]
        smoke = "{{ %r[params.endpoint] }}" % {e.name: e.smoke_protocol or "" for e in s.endpoints}
    with DAG(
        dag_id=s.dag_id,
        description=f"Deploy or roll back a registered model on endpoint {' or '.join(names)}",
        schedule=None,
        start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
        catchup=False,
        max_active_runs=1,
        default_args={
            **({"owner": s.owner} if s.owner else {}),
            "on_failure_callback": task_failure_alert(s.slack_conn_id),  # Slack, when the connection exists
            "retries": 1, "queue": queue("deploy")},
        params={
            "model": Param(s.model_name, type="string", description="registered model name"),
            "version": Param(None, type=["null", "string"], description="version to deploy (or give an alias)"),
            "alias": Param(None, type=["null", "string"], description="alias to deploy, e.g. production"),
            "endpoint": Param(names[0], enum=names, description=f"endpoint (its ledger is endpoint.<name>{s.endpoint_help})"),
            "action": Param("deploy", enum=["deploy", "rollback"]),
            "move_alias": Param(None, type=["null", "string"], pattern="^[a-z][a-z0-9_-]{0,30}$",
                                description="an alias to point at the deployed version once it serves (a promotion: "
                                            "the level's name); empty: aliases stay"),
            "canary_percent": Param(None, type=["null", "integer"], minimum=1, maximum=100,
                                    description="share the new version takes first beside the serving one (kubernetes, "
                                                "sagemaker, vertex); empty: the endpoint's setting"),
        },
        tags=s.tags,
    ) as dag:
        dag.fileloc = s.fileloc or sys._getframe(1).f_code.co_filename

        @task(task_id="resolve", inlets=[endpoint_asset(name) for name in names])
        def resolve(params=None, inlet_events=None) -> dict:
            """What to deploy: the given version/alias, or for a rollback the ledger's previous version."""
            from airflow.sdk.exceptions import AirflowFailException

            from operators.deploy.ledger import version_before_current

            if params["move_alias"] and not (params["action"] == "deploy" and params["version"]):
                raise AirflowFailException("move_alias needs a deploy of a given version (action deploy, version set)")
            if params["action"] == "deploy" or params["version"]:
                if not (params["version"] or params["alias"]):
                    raise AirflowFailException("give a version or an alias to deploy")
                reason = f"promoted to {params['move_alias']}" if params["move_alias"] else params["action"]
                return {"version": params["version"], "alias": None if params["version"] else params["alias"],
                        "reason": reason}
            events = sorted(inlet_events[endpoint_asset(params["endpoint"])], key=lambda e: e.timestamp)
            ledger = [e.extra for e in events if e.extra.get("model") == params["model"]]
            previous = version_before_current(ledger)
            if previous is None:
                raise AirflowFailException(f"the ledger of {params['endpoint']} has no earlier version of "
                                           f"{params['model']} to roll back to ({len(ledger)} entries); give a version")
            print(f"rollback: the ledger says {previous} served before the current version")
            return {"version": previous, "alias": None, "reason": "rollback (from the ledger)"}

        @task.short_circuit(task_id="alias_to_move")
        def alias_to_move(params=None) -> bool:
            """Only a promotion moves an alias, and only once its version serves."""
            return bool(params["move_alias"])

        chosen = resolve()
        deployed, _, _ = deploy_steps(
            model_name="{{ params.model }}", version=chosen["version"], alias=chosen["alias"],
            endpoint="{{ params.endpoint }}", reason=chosen["reason"],  # the ledger records the run id too
            canary_percent="{{ params.canary_percent }}", target=target, target_conn_id=conn_id, ledger_outlets=ledger,
            smoke_protocol=smoke,
        )
        deployed >> alias_to_move() >> PromoteModelOperator(task_id="move_alias", model_name="{{ params.model }}",
                                                            version=chosen["version"],
                                                            aliases=["{{ params.move_alias }}"])
    return dag
