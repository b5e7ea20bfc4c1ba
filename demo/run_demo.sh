#!/usr/bin/env bash
# make demo: the two models of models/ (their specs), each trained, registered, deployed to its
# development endpoint and promoted to production once development has served its clients well,
# with `airflow dags test` of <model>__train. Embedded defaults only: SQLite for Airflow's
# metadata, the source tables and the MLflow registry; artifacts and endpoints on the local disk.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
DEMO="${ML_DEMO_DIR:-$ROOT/.demo}"  # where the demo keeps its databases, artifacts and logs
mkdir -p "$DEMO/airflow" "$DEMO/artifacts"

PY="$ROOT/.venv/bin/python"
eval "$("$PY" -m demo.environment --shell "$DEMO")"  # the settings `make airflow` uses too
AIRFLOW="$ROOT/.venv/bin/airflow"
# `airflow dags test` runs each trigger inline, so no scheduler can race the evidence trigger
# (apache/airflow#67287): its 20 s quiet start is not needed here (operators/deploy/promotion.py)
export ML_EVIDENCE_SETTLE_SECONDS=0

echo "==> seeding the demo source tables (scikit-learn's bundled breast-cancer data; posts made on the spot)"
LOGICAL_DATE=$("$PY" -m demo.seed_source --sqlite "$DEMO/source.db" --print-logical-date | tee /dev/stderr | tail -n 1)
TEXT_DATE=$("$PY" -m demo.moderation_posts --sqlite "$DEMO/source.db" --print-logical-date | tee /dev/stderr | tail -n 1)

echo "==> preparing Airflow's metadata database (SQLite)"
"$AIRFLOW" db migrate > "$DEMO/db-migrate.log" 2>&1 || { cat "$DEMO/db-migrate.log"; exit 1; }

# The demo's users: clients of both development endpoints, from the moment each serves, so each
# new version's promotion to production has evidence (the endpoints' own /metrics).
"$PY" -m demo.clients --endpoints-dir "$ML_ENDPOINTS_DIR" demo-local demo-text > "$DEMO/clients.log" 2>&1 &
CLIENTS=$!
trap 'kill "$CLIENTS" 2>/dev/null || true' EXIT

train() {  # model, logical date, log
  echo "==> airflow dags test $1__train $2 (development, then production on evidence)"
  "$AIRFLOW" dags test "$1__train" "$2" > "$3" 2>&1 || {
    tail -n 80 "$3"; echo "dags test failed; full log: $3" >&2; exit 1; }
  grep -oE "(Registered|already registered) [^\[]*" "$3" | tail -n 1 || true
  grep -oE "Evidence holds: .*" "$3" | tail -n 1 || true
}

train demo_classifier "$LOGICAL_DATE" "$DEMO/dags-test.log"
echo "==> the registered model version"
"$PY" -m demo.report --artifacts "$DEMO/artifacts" --model-name demo_classifier \
  --tracking-uri "sqlite:///$DEMO/mlflow.db" --endpoint-state "$ML_ENDPOINTS_DIR/demo-production/state.json" \
  --levels "development=$ML_ENDPOINTS_DIR/demo-local" "production=$ML_ENDPOINTS_DIR/demo-production"
echo "full DAG run log: $DEMO/dags-test.log"

# Its spec schedules it at 03:30: the run whose interval ends 30 minutes after the seeded day's.
TEXT_DATE=$("$PY" -c "import sys, datetime as d; print((d.datetime.fromisoformat(sys.argv[1]) + d.timedelta(minutes=30)).isoformat())" "$TEXT_DATE")
train demo_moderation "$TEXT_DATE" "$DEMO/dags-test-text.log"
echo "==> the text moderation model"
"$PY" -m demo.report --artifacts "$DEMO/artifacts" --model-name demo_moderation \
  --tracking-uri "sqlite:///$DEMO/mlflow.db" --endpoint-state "$ML_ENDPOINTS_DIR/demo-text-production/state.json" \
  --levels "development=$ML_ENDPOINTS_DIR/demo-text" "production=$ML_ENDPOINTS_DIR/demo-text-production" \
  --own-text "type your own post here"
echo "full DAG run log: $DEMO/dags-test-text.log"
