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
