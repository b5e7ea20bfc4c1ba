"""The training pipeline of one model: extract -> wait for snapshot -> check the data (against the
production version's training snapshot and the spec's rules) -> train -> wait for model ->
register -> evaluate (candidate vs the alias it would replace, same held-out rows) -> gate ->
promote (move the alias) -> deploy if Param ``deploy`` (wait, smoke test, automatic rollback),
with every deploy in the endpoint's ledger; a failed deploy puts the alias back. Task results
travel as XComArgs (``task.output[...]``).

What a person may change per run is a Param in the trigger form, defaulting to the caller's
settings (the environment for ``ml_training_pipeline``, a model spec for ``<model>__train``).
Heavy libraries are imported only inside the operators' execute methods.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from operators.pipelines import settings


@dataclass(frozen=True)
class NextLevel:
    """A service level after the first: its endpoint, and what moves a version up to it."""

    name: str  # also the alias it moves
    endpoint: str
    target: str | None
    conn_id: str
    promotion: dict[str, Any]  # the spec's rules: evidence (min_requests, ...) or approval
    smoke_protocol: str | None = None  # how its deploy's smoke test calls the endpoint


@dataclass(frozen=True)
class TrainingSettings:
    """Everything that differs between two models' training pipelines."""

    dag_id: str
    model_name: str
    sql: str  # a SQL file, relative to the DAG's template search path
    endpoint: str  # where a promoted version is deployed
    alias: str = "production"  # the alias the gate compares against and promote moves
    template_searchpath: list[str] | None = None
    source_conn_id: str = "ml_source"
    extract_from: str = "sql"
    compute: str = "local"
    schedule: str | None = "0 3 * * *"
    catchup: bool = False
    retrain_on_new_snapshot: bool = True
    deploy_target: str | None = None
    endpoint_conn_id: str = "ml_endpoint"
    smoke_protocol: str | None = None  # invocations, v2, grpc: the first deploy's smoke test
    model_class: str = "sklearn"
    estimator: str = "HistGradientBoostingClassifier"
    hyperparameters: dict[str, Any] = field(default_factory=lambda: {"max_iter": 100, "learning_rate": 0.1})
    target: str = "target"
    features: list[str] | None = None
    exclude: list[str] = field(default_factory=lambda: ["event_time"])
    test_fraction: float = 0.2
    seed: int = 42
    resources: dict[str, Any] = field(default_factory=lambda: {"cpu": "1", "memory": "2Gi", "gpu": 0})
    timeout_hours: float = 4
    metric: str = "accuracy"
    direction: str = "maximize"
    margin: float = 0.0
    source_table: str | None = "demo_training_rows"  # the legacy SQL's {{ params.source_table }}
    slack_conn_id: str | None = None
    owner: str | None = None  # default_args owner: the spec's owners
    description: str = "Extract training rows, train a model, register, evaluate, promote and deploy it"
    tags: list[str] = field(default_factory=lambda: ["ml", "training"])
    doc_md: str | None = None
    fileloc: str | None = None  # the DAG file (its code view, its reparse); default: the caller's file
    # after the first level's deploy, each next level in turn: evidence (or approval), alias, deploy
    next_levels: list[NextLevel] = field(default_factory=list)
    # the spec's data_checks (ml/monitoring/checks.py): limits against the production version's
    # training snapshot and rules per column; None: the defaults
    data_checks: dict[str, Any] | None = None


def training_pipeline(s: TrainingSettings):
    """The DAG; created inside its own ``with`` block, so Airflow registers it."""
    import sys

    import pendulum
    from airflow.providers.standard.operators.empty import EmptyOperator
    from airflow.sdk import DAG, AssetAlias, AssetOrTimeSchedule, CronDataIntervalTimetable, Param, chain, task

    from ml.models.classes import choices as model_choices
    from ml.training_config import ESTIMATORS
    from operators.alerts import task_failure_alert
    from operators.artifact_root import artifact_root
    from operators.deploy.steps import deploy_steps
    from operators.extract.published_snapshots import training_snapshots_asset
    from operators.extract.sql_to_parquet import extract_operator
    from operators.registry.promote_model import PromoteModelOperator, RestoreAliasesOperator
    from operators.registry.register_model import RegisterModelOperator
    from operators.sensors.artifact_sensor import ArtifactSensor
    from operators.training.check_data import CheckDataOperator
    from operators.training.evaluate_model import DIRECTIONS, EvaluateModelOperator
    from operators.training.train_model import training_operator
    from operators.workers import queue

    root = artifact_root()
    # Assets are named at run time from the same rendered values as the paths (see
    # operators/asset_events.py): a run for another model records events on that model's assets.
    snapshot_events = AssetAlias(f"{s.dag_id}.snapshots")
    registered_events = AssetAlias(f"{s.dag_id}.registered")
    # Data-aware retraining: a snapshot published on this asset starts a run that trains on it
    # (operators/extract/published_snapshots.py); the cron schedule runs as well.
    published = training_snapshots_asset(s.model_name) if s.retrain_on_new_snapshot else None
    cron = CronDataIntervalTimetable(s.schedule, timezone="UTC") if s.schedule else None
    schedule = AssetOrTimeSchedule(timetable=cron, assets=published) if cron and published else (cron or published)
    params = {
        # only the classes this deployment allows (built-ins and ML_MODEL_CLASSES): never an import path
        "model": Param(s.model_class, enum=model_choices(),
                       description="model class: sklearn (tabular), text (text classifier), or one this deployment "
                                   "allows with ML_MODEL_CLASSES (docs/custom-models.md)"),
        "estimator": Param(s.estimator, enum=sorted(ESTIMATORS),
                           description="the sklearn model's scikit-learn estimator (other models ignore it)"),
        "hyperparameters": Param(s.hyperparameters, type="object",
                                 description="the model's parameters, as JSON (sklearn: the estimator's)"),
        "target": Param(s.target, type="string", description="column to predict"),
        **({"features": Param(s.features, type=["null", "array"], description="feature columns; empty: all but "
                                                                               "the target and the excluded")}
           if s.features is not None else {}),
        "exclude_columns": Param(s.exclude, type="array", description="columns that are not features"),
        "test_fraction": Param(s.test_fraction, type="number", minimum=0.05, maximum=0.5, description="held-out share"),
        "seed": Param(s.seed, type="integer", description="seed of the split and the estimator"),
        "cpu": Param(str(s.resources["cpu"]), type="string", description="kubernetes: CPU request"),
        "memory": Param(str(s.resources["memory"]), type="string", description="kubernetes: memory request and limit"),
        "gpu": Param(int(s.resources["gpu"]), type="integer", minimum=0, description="kubernetes: nvidia.com/gpu count"),
        "model_name": Param(s.model_name, type="string", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$"),
        **({"source_table": Param(s.source_table, type="string", pattern=r"^[A-Za-z_][A-Za-z0-9_.]*$")}
           if s.source_table else {}),
        "metric": Param(s.metric, enum=["accuracy", "f1", "roc_auc", "rmse", "mae", "r2"],
                        description="metric the gate compares"),
        "direction": Param(s.direction, enum=list(DIRECTIONS)),
        "margin": Param(s.margin, type="number", minimum=0, description="promote only if better by at least this"),
        "check_data": Param(True, type="boolean",
                            description="check the snapshot against the production version's training snapshot "
                                        "and the spec's data_checks before training; off: train on it anyway"),
        "deploy": Param(True, type="boolean",
                        description=f"deploy a promoted version to endpoint {s.endpoint} (the gate decides promotion)"),
        "canary_percent": Param(None, type=["null", "integer"], minimum=1, maximum=100,
                                description="share the new version takes first beside the serving one (kubernetes, "
                                            "sagemaker, vertex); empty: the endpoint's setting"),
    }
    with DAG(
        dag_id=s.dag_id,
        description=s.description,
        doc_md=s.doc_md,
        schedule=schedule,
        start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
        catchup=s.catchup,
        max_active_runs=1,
        render_template_as_native_obj=True,  # Params keep their JSON types inside templated dicts
        template_searchpath=s.template_searchpath,
        default_args={
            **({"owner": s.owner} if s.owner else {}),
            "on_failure_callback": task_failure_alert(s.slack_conn_id),  # Slack, when the connection exists
            "retries": 2,
            "retry_delay": settings.retry_delay(),
            "retry_exponential_backoff": 2.0,
            "max_retry_delay": timedelta(minutes=10),
        },
        params=params,
        tags=s.tags,
    ) as dag:
        dag.fileloc = s.fileloc or sys._getframe(1).f_code.co_filename
        extract = extract_operator(
            s.extract_from,
            redshift=settings.redshift(),
            bigquery=settings.bigquery(),
            task_id="extract",
            conn_id=s.source_conn_id,
            sql=s.sql,
            snapshot_root=root + "/snapshots/{{ params.model_name }}",
            asset_name="{{ params.model_name }}.snapshots",
            outlets=[snapshot_events],
            published_asset=published.name if published else None,
            model_name="{{ params.model_name }}",
        )
        wait_for_snapshot = ArtifactSensor(
            task_id="wait_for_snapshot", uri=extract.output["uri"], kind="snapshot", poke_interval=10, timeout=3600
        )
        check_data = CheckDataOperator(
            task_id="check_data", data_uri=extract.output["uri"], model_name="{{ params.model_name }}",
            # the version in production first: the highest level holding a version
            aliases=[level.name for level in reversed(s.next_levels)] + [s.alias], rules=s.data_checks,
            enabled="{{ params.check_data }}",
        )
        train = training_operator(
            s.compute,
            kubernetes=settings.kubernetes(),
            sagemaker=settings.sagemaker(),
            vertex=settings.vertex(),
            task_id="train",
            data_uri=extract.output["uri"],
            output_root=root + "/models/{{ params.model_name }}",  # + the snapshot's partition
            config={
                "model": "{{ params.model }}",
                "estimator": "{{ params.estimator if params.model == 'sklearn' else None }}",
                "params": "{{ params.hyperparameters }}",
                "target": "{{ params.target }}",
                **({"features": "{{ params.features or None }}"} if s.features is not None else {}),
                "exclude": "{{ params.exclude_columns }}",
                "test_fraction": "{{ params.test_fraction }}",
                "seed": "{{ params.seed }}",
            },
            execution_timeout=timedelta(hours=s.timeout_hours),
            queue=queue("training"),  # Celery: only training workers take it
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
            alias=s.alias, metric="{{ params.metric }}", direction="{{ params.direction }}",
            margin="{{ params.margin }}",
        )

        @task.branch(task_id="gate")
        def gate(verdict: dict) -> str:
            """Promote only a candidate that beats the alias's version by the margin."""
            print(f"gate: {verdict['metric']} candidate={verdict['candidate'][verdict['metric']]:.4f} "
                  f"{s.alias}={verdict['champion'][verdict['metric']] if verdict['champion'] else None} "
                  f"-> {'promote' if verdict['promote'] else 'keep'}: {verdict['reason']}")
            return "promote" if verdict["promote"] else f"keep_{s.alias}"

        promote = PromoteModelOperator(task_id="promote", model_name="{{ params.model_name }}",
                                       version=register.output["version"], aliases=[s.alias])
        keep = EmptyOperator(task_id=f"keep_{s.alias}")

        @task.branch(task_id="deploy_or_not")
        def deploy_or_not(params=None) -> str:
            """The promoted version goes to the endpoint when Param ``deploy`` is on."""
            return "deploy" if params["deploy"] else "skip_deploy"

        deploy, record_ledger, watcher = deploy_steps(
            model_name="{{ params.model_name }}", version=register.output["version"],
            reason="deploy after training run {{ run_id }}", canary_percent="{{ params.canary_percent }}",
            endpoint=s.endpoint, target=s.deploy_target, target_conn_id=s.endpoint_conn_id,
            smoke_protocol=s.smoke_protocol)
        skip_deploy = EmptyOperator(task_id="skip_deploy")
        # only when the deploy failed: the registry must not call a refused version by the alias
        restore_aliases = RestoreAliasesOperator(task_id="restore_aliases", model_name="{{ params.model_name }}",
                                                 promote_task_id="promote")
        deploy >> restore_aliases
        chain(extract, wait_for_snapshot, check_data, train, wait_for_model, register, evaluate, gate(evaluate.output),
              [promote, keep])
        chain(promote, deploy_or_not(), [deploy, skip_deploy])
        _promotion_path(s, register.output["version"], deploy)
    return dag


def _promotion_path(s: TrainingSettings, version, first_deploy) -> None:
    """Each next level: wait for evidence from the level below (deferred) or a person's approval,
    then move the level's alias and deploy its endpoint; its own ledger, its own rollback."""
    from datetime import timedelta

    from airflow.sdk import chain

    from operators.deploy.promotion import AwaitEvidenceOperator
    from operators.deploy.steps import deploy_steps
    from operators.registry.promote_model import PromoteModelOperator, RestoreAliasesOperator

    below, upstream = {"endpoint": s.endpoint, "target": s.deploy_target,
                       "conn_id": s.endpoint_conn_id}, first_deploy
    for level in s.next_levels:
        here = {"endpoint": level.endpoint, "target": level.target, "conn_id": level.conn_id}
        rules, window = level.promotion, float(level.promotion.get("window_minutes", 30))
        if rules.get("approval"):
            from airflow.providers.standard.operators.hitl import ApprovalOperator

            wait = ApprovalOperator(
                task_id=f"approve_{level.name}", subject=f"Promote {s.model_name} to {level.name}?",
                body=(f"Version {{{{ ti.xcom_pull(task_ids='register')['version'] }}}} of {s.model_name} serves on "
                      f"{below['endpoint']}. Approve to move alias {level.name} to it and deploy {level.endpoint}."),
                response_timeout=timedelta(minutes=window), retries=0)
        else:
            wait = AwaitEvidenceOperator(task_id=f"evidence_{level.name}", version=version, lower=below, higher=here,
                                         rules=rules, window_minutes=window)
        waits = [wait]
        if rules.get("feedback_table"):  # and, on labelled feedback, accuracy at or above the floor
            from operators.deploy.feedback import FeedbackAccuracyOperator

            waits.append(FeedbackAccuracyOperator(
                task_id=f"feedback_{level.name}", version=version, endpoint=below, conn_id=s.source_conn_id,
                table=rules["feedback_table"], label=s.target, floor=rules["accuracy_floor"],
                min_rows=rules.get("feedback_min_rows", 1)))
        promote = PromoteModelOperator(task_id=f"promote_{level.name}", model_name="{{ params.model_name }}",
                                       version=version, aliases=[level.name])
        deploy, _, _ = deploy_steps(
            model_name="{{ params.model_name }}", version=version, task_id=f"deploy_{level.name}",
            suffix=f"_{level.name}", reason=f"promoted to {level.name} by run {{{{ run_id }}}}",
            endpoint=level.endpoint, target=level.target, target_conn_id=level.conn_id,
            smoke_protocol=level.smoke_protocol)
        restore = RestoreAliasesOperator(task_id=f"restore_aliases_{level.name}", model_name="{{ params.model_name }}",
                                         promote_task_id=f"promote_{level.name}")
        chain(upstream, *waits, promote, deploy, restore)
        below, upstream = here, deploy
