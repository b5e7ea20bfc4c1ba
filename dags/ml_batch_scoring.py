"""ml_batch_scoring (an Airflow DAG): every day, score the day's rows with the deployment's default model (the
version behind an alias); a model spec's ``batch_scoring`` gives a model its own
``<model>__score``. The steps: operators/pipelines/scoring.py."""

from __future__ import annotations

import os

from operators.pipelines.scoring import ScoringSettings, scoring_dag

dag = scoring_dag(ScoringSettings(
    dag_id="ml_batch_scoring",
    model_name=os.environ.get("ML_MODEL_NAME", "demo_classifier"),
    sql="sql/scoring_rows.sql",
    schedule=os.environ.get("ML_SCORING_SCHEDULE", "0 4 * * *"),
    parallel=int(os.environ.get("ML_SCORING_PARALLEL", "2")),
    source_conn_id=os.environ.get("ML_SOURCE_CONN_ID", "ml_source"),
    extract_from=os.environ.get("ML_EXTRACT_FROM", "sql"),
))
