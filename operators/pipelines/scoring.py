"""Batch scoring: on a schedule, score the interval's rows with the model version behind an alias.

extract (the interval's rows, same extract operator as training) -> plan (resolve the alias,
verify the model, cut the snapshot into shards) -> score (one mapped task per shard, at most
``parallel`` at once per run) -> commit (the partition's manifest + an asset event on
``<model>.predictions``). Backfill it like any interval DAG: one partition per interval. An
interval with no rows skips its run's tasks (the run succeeds) rather than failing.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class ScoringSettings:
    dag_id: str
    model_name: str
    sql: str  # relative to the template search path
    schedule: str | None = "0 4 * * *"
    alias: str = "production"
    rows_per_shard: int = 1_000_000
    parallel: int = 2
    source_conn_id: str = "ml_source"
    extract_from: str = "sql"
    template_searchpath: list[str] | None = None
    source_table: str | None = "demo_training_rows"  # the legacy SQL's {{ params.source_table }}
    slack_conn_id: str | None = None
    owner: str | None = None  # default_args owner: the spec's owners
    tags: list[str] = field(default_factory=lambda: ["ml", "scoring"])
    fileloc: str | None = None


def scoring_dag(s: ScoringSettings):
    import sys

    import pendulum
    from airflow.sdk import DAG, AssetAlias, CronDataIntervalTimetable, Param

    from operators.alerts import task_failure_alert
    from operators.artifact_root import artifact_root
    from operators.extract.sql_to_parquet import extract_operator
    from operators.pipelines import settings
    from operators.workers import queue
    from operators.scoring.batch_scoring import CommitPredictionsOperator, PlanScoringOperator, ScoreShardOperator

    root = artifact_root()
    predictions = AssetAlias(f"{s.dag_id}.predictions")
    with DAG(
        dag_id=s.dag_id,
        description="Score each interval's rows with the model version behind an alias, in shards",
        schedule=CronDataIntervalTimetable(s.schedule, timezone="UTC") if s.schedule else None,
        start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
        catchup=False,
        # One run at a time: Airflow 3.3.2 fails a task when two runs emit the first event of an asset
        # created at run time (an AssetAlias outlet) at once: the asset insert hits its unique index.
        max_active_runs=1,
        template_searchpath=s.template_searchpath,
        default_args={
            **({"owner": s.owner} if s.owner else {}),
            "on_failure_callback": task_failure_alert(s.slack_conn_id),  # Slack, when the connection exists
            "retries": 2, "retry_delay": settings.retry_delay()},
        params={
            "model_name": Param(s.model_name, type="string", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$"),
            "alias": Param(s.alias, type="string", description="score with the version behind this alias"),
            **({"source_table": Param(s.source_table, type="string", pattern=r"^[A-Za-z_][A-Za-z0-9_.]*$")}
               if s.source_table else {}),
            "rows_per_shard": Param(s.rows_per_shard, type="integer", minimum=1,
                                    description="rows per mapped scoring task"),
        },
        tags=s.tags,
    ) as dag:
        dag.fileloc = s.fileloc or sys._getframe(1).f_code.co_filename
        extract = extract_operator(
            s.extract_from,
            task_id="extract",
            conn_id=s.source_conn_id,
            sql=s.sql,
            snapshot_root=root + "/scoring_inputs/{{ params.model_name }}",
            skip_when_empty=True,  # an interval without rows is nothing to score: the run succeeds, skipped
        )
        plan = PlanScoringOperator(task_id="plan", model_name="{{ params.model_name }}", alias="{{ params.alias }}",
                                   snapshot_uri=extract.output["uri"], rows_per_shard="{{ params.rows_per_shard }}")
        score = ScoreShardOperator.partial(
            task_id="score", model=plan.output["model"], snapshot_uri=extract.output["uri"],
            predictions_root=root + "/predictions/{{ params.model_name }}",
            max_active_tis_per_dagrun=s.parallel, queue=queue("scoring"),
        ).expand(shard=plan.output)
        commit = CommitPredictionsOperator(
            task_id="commit", model_name="{{ params.model_name }}", model=plan.output["model"],
            snapshot_uri=extract.output["uri"], predictions_root=root + "/predictions/{{ params.model_name }}",
            shards=score.output, asset_name="{{ params.model_name }}.predictions", outlets=[predictions],
        )
        score >> commit
    return dag
