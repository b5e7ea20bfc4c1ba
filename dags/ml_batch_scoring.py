"""ml_batch_scoring: every day, score the day's rows with the model version behind an alias.

extract (the interval's rows, same extract operator as training) -> plan (resolve the alias,
verify the model, cut the snapshot into shards) -> score (one mapped task per shard, at most
``ML_SCORING_PARALLEL`` at once per run) -> commit (the partition's manifest + an asset event
on ``<model>.predictions``). Backfill it like any interval DAG: one partition per day. A day
with no rows skips its run's tasks (the run succeeds) rather than failing.
"""

from __future__ import annotations

import os
from datetime import timedelta

import pendulum
from airflow.sdk import DAG, AssetAlias, CronDataIntervalTimetable, Param

from operators.alerts import task_failure_alert
from operators.artifact_root import artifact_root
from operators.scoring.batch_scoring import CommitPredictionsOperator, PlanScoringOperator, ScoreShardOperator
from operators.extract.sql_to_parquet import extract_operator

ARTIFACT_ROOT = artifact_root()
SOURCE_CONN_ID = os.environ.get("ML_SOURCE_CONN_ID", "ml_source")
MODEL_NAME = os.environ.get("ML_MODEL_NAME", "demo_classifier")
SCHEDULE = os.environ.get("ML_SCORING_SCHEDULE", "0 4 * * *")
PARALLEL = int(os.environ.get("ML_SCORING_PARALLEL", "2"))
EXTRACT_FROM = os.environ.get("ML_EXTRACT_FROM", "sql")

predictions = AssetAlias("ml_batch_scoring.predictions")

with DAG(
    dag_id="ml_batch_scoring",
    description="Score each day's rows with the model version behind an alias, in shards",
    schedule=CronDataIntervalTimetable(SCHEDULE, timezone="UTC"),
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    # One run at a time: Airflow 3.3.2 fails a task when two runs emit the first event of an asset
    # created at run time (an AssetAlias outlet) at once: the asset insert hits its unique index.
    max_active_runs=1,
    default_args={
        "on_failure_callback": task_failure_alert(),  # Slack, when ML_SLACK_CONN_ID exists
        "retries": 2, "retry_delay": timedelta(seconds=float(os.environ.get("ML_RETRY_DELAY_SECONDS", "30")))},
    params={
        "model_name": Param(MODEL_NAME, type="string", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$"),
        "alias": Param("production", type="string", description="score with the version behind this alias"),
        "source_table": Param("demo_training_rows", type="string", pattern=r"^[A-Za-z_][A-Za-z0-9_.]*$"),
        "rows_per_shard": Param(1_000_000, type="integer", minimum=1, description="rows per mapped scoring task"),
    },
    tags=["ml", "scoring"],
) as dag:
    extract = extract_operator(
        EXTRACT_FROM,
        task_id="extract",
        conn_id=SOURCE_CONN_ID,
        sql="sql/scoring_rows.sql",
        snapshot_root=ARTIFACT_ROOT + "/scoring_inputs/{{ params.model_name }}",
        skip_when_empty=True,  # a day without rows is nothing to score: the run succeeds, skipped
    )
    plan = PlanScoringOperator(task_id="plan", model_name="{{ params.model_name }}", alias="{{ params.alias }}",
                               snapshot_uri=extract.output["uri"], rows_per_shard="{{ params.rows_per_shard }}")
    score = ScoreShardOperator.partial(
        task_id="score", model=plan.output["model"], snapshot_uri=extract.output["uri"],
        predictions_root=ARTIFACT_ROOT + "/predictions/{{ params.model_name }}",
        max_active_tis_per_dagrun=PARALLEL,
    ).expand(shard=plan.output)
    commit = CommitPredictionsOperator(
        task_id="commit", model_name="{{ params.model_name }}", model=plan.output["model"],
        snapshot_uri=extract.output["uri"], predictions_root=ARTIFACT_ROOT + "/predictions/{{ params.model_name }}",
        shards=score.output, asset_name="{{ params.model_name }}.predictions", outlets=[predictions],
    )
    score >> commit
