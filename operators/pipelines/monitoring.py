"""The monitoring DAG of a model (``<name>__monitor``): monitor (captured predictions x labels,
drift, the report, the asset event, Slack) -> wants_retraining (short circuit) -> retrain
(triggers ``<name>__train``). One run a day by default; a run recomputes its whole look-back
window, so a backfill or a rerun gives the same report for the same captured rows and labels.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class MonitoringSettings:
    dag_id: str
    model_name: str
    train_dag_id: str
    schedule: str | None = "0 5 * * *"
    lookback_days: int = 7
    capture_uri: str | None = None  # default <artifact root>/captures
    drift_threshold: float = 0.2
    drift_min_rows: int = 200
    feedback: dict | None = None  # the spec's monitoring.feedback, conn_id filled in
    template_searchpath: list[str] | None = None
    slack_conn_id: str | None = None
    owner: str | None = None
    tags: list[str] = field(default_factory=lambda: ["ml", "monitoring"])
    fileloc: str | None = None


def monitoring_dag(s: MonitoringSettings):
    import sys

    import pendulum
    from airflow.providers.standard.operators.python import ShortCircuitOperator
    from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
    from airflow.sdk import DAG, AssetAlias, CronDataIntervalTimetable

    from operators.alerts import task_failure_alert
    from operators.artifact_root import artifact_root
    from operators.monitoring.monitor_model import MonitorModelOperator, retrain_wanted
    from operators.pipelines import settings

    root = artifact_root()
    feedback = s.feedback or {}
    with DAG(
        dag_id=s.dag_id,
        description=f"{s.model_name}: the metric on labelled feedback per version and day, and drift of captured inputs",
        schedule=CronDataIntervalTimetable(s.schedule, timezone="UTC") if s.schedule else None,
        start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
        catchup=False,
        max_active_runs=1,  # see scoring.py: two runs' first events on an alias-created asset collide
        template_searchpath=s.template_searchpath,
        default_args={
            **({"owner": s.owner} if s.owner else {}),
            "on_failure_callback": task_failure_alert(s.slack_conn_id),
            "retries": 2, "retry_delay": settings.retry_delay()},
        tags=s.tags,
    ) as dag:
        dag.fileloc = s.fileloc or sys._getframe(1).f_code.co_filename
        monitor = MonitorModelOperator(
            task_id="monitor", model_name=s.model_name, capture_uri=s.capture_uri or root + "/captures",
            report_root=root + "/monitoring", lookback_days=s.lookback_days,
            feedback_sql=feedback.get("sql"), feedback_conn_id=feedback.get("conn_id", "ml_source"),
            label=feedback.get("label", "label"), metric=feedback.get("metric", "accuracy"),
            floor=feedback.get("floor"), min_rows=feedback.get("min_rows", 50), retrain=feedback.get("retrain", False),
            drift_threshold=s.drift_threshold, drift_min_rows=s.drift_min_rows, slack_conn_id=s.slack_conn_id,
            outlets=[AssetAlias(f"{s.dag_id}.monitoring")])
        wants = ShortCircuitOperator(task_id="wants_retraining", python_callable=retrain_wanted,
                                     op_args=[monitor.output])
        retrain = TriggerDagRunOperator(task_id="retrain", trigger_dag_id=s.train_dag_id, logical_date=None)
        monitor >> wants >> retrain
    return dag
