#!/usr/bin/env bash
# make demo: seed the embedded source, run ml_training_pipeline with `airflow dags test`,
# print the registered model version. Embedded defaults only: SQLite for Airflow's
# metadata, the source table and the MLflow registry; artifacts on the local disk.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
DEMO="${ML_DEMO_DIR:-$ROOT/.demo}"  # where the demo keeps its databases, artifacts and logs
mkdir -p "$DEMO/airflow" "$DEMO/artifacts"

PY="$ROOT/.venv/bin/python"
eval "$("$PY" -m demo.environment --shell "$DEMO")"  # the settings `make airflow` uses too
AIRFLOW="$ROOT/.venv/bin/airflow"

echo "==> seeding the demo source table (scikit-learn's bundled breast-cancer data)"
LOGICAL_DATE=$("$PY" -m demo.seed_source --sqlite "$DEMO/source.db" --print-logical-date | tee /dev/stderr | tail -n 1)

echo "==> preparing Airflow's metadata database (SQLite)"
"$AIRFLOW" db migrate > "$DEMO/db-migrate.log" 2>&1 || { cat "$DEMO/db-migrate.log"; exit 1; }

echo "==> airflow dags test ml_training_pipeline $LOGICAL_DATE"
"$AIRFLOW" dags test ml_training_pipeline "$LOGICAL_DATE" > "$DEMO/dags-test.log" 2>&1 || {
  tail -n 80 "$DEMO/dags-test.log"; echo "dags test failed; full log: $DEMO/dags-test.log" >&2; exit 1; }
grep -oE "(Registered|already registered) [^\[]*" "$DEMO/dags-test.log" | tail -n 1 || true

echo "==> the registered model version"
"$PY" -m demo.report --artifacts "$DEMO/artifacts" --model-name "$ML_MODEL_NAME" \
  --tracking-uri "sqlite:///$DEMO/mlflow.db" --endpoint-state "$ML_ENDPOINTS_DIR/$ML_ENDPOINT/state.json"
echo "full DAG run log: $DEMO/dags-test.log"

# The text moderation model: the built-in `text` model on generated posts (English and Japanese),
# through the same DAG, to its own endpoint. Its run's logical date is a second after the day's,
# so the two runs of the DAG never share a run id.
echo "==> seeding the moderation posts (labelled texts made on the spot, nothing downloaded)"
TEXT_DATE=$("$PY" -m demo.moderation_posts --sqlite "$DEMO/source.db" --print-logical-date | tee /dev/stderr | tail -n 1)
TEXT_DATE=$("$PY" -c "import sys, datetime as d; print((d.datetime.fromisoformat(sys.argv[1]) + d.timedelta(seconds=1)).isoformat())" "$TEXT_DATE")
TEXT_CONF='{"model": "text", "model_name": "demo_moderation", "source_table": "demo_moderation_posts", "target": "label",
  "exclude_columns": ["event_time", "lang", "length"], "hyperparameters": {"C": 5.0}, "metric": "accuracy"}'
echo "==> airflow dags test ml_training_pipeline $TEXT_DATE (model text, endpoint demo-text)"
ML_MODEL_NAME=demo_moderation ML_ENDPOINT=demo-text "$AIRFLOW" dags test ml_training_pipeline "$TEXT_DATE" \
  --conf "$TEXT_CONF" > "$DEMO/dags-test-text.log" 2>&1 || {
  tail -n 80 "$DEMO/dags-test-text.log"; echo "dags test failed; full log: $DEMO/dags-test-text.log" >&2; exit 1; }
grep -oE "(Registered|already registered) [^\[]*" "$DEMO/dags-test-text.log" | tail -n 1 || true
echo "==> the text moderation model"
"$PY" -m demo.report --artifacts "$DEMO/artifacts" --model-name demo_moderation \
  --tracking-uri "sqlite:///$DEMO/mlflow.db" --endpoint-state "$ML_ENDPOINTS_DIR/demo-text/state.json" \
  --own-text "type your own post here"
echo "full DAG run log: $DEMO/dags-test-text.log"
