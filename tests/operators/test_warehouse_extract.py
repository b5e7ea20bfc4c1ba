"""Warehouse extraction without rows through the worker: Redshift's UNLOAD and BigQuery's export
job write Parquet into the object store (moto's S3, the GCS emulator); the operators commit the
same snapshot manifest as SqlToParquetOperator, which the trainer then reads. The exact
statements and job requests are asserted field by field."""

from __future__ import annotations

import json

import boto3
import psycopg2
import pytest

from ml import artifacts, train
from ml.snapshots import read_snapshot
from operators.extract.redshift_to_parquet import RedshiftToParquetOperator, unload_statement
from operators.extract.sql_to_parquet import EmptyExtractError, SchemaMismatchError
from tests.cloud_standins import RedshiftStandIn
from tests.helpers import breast_cancer_table

WINDOW_SQL = ("SELECT * FROM patients WHERE seen_at >= '{{ window_start.isoformat() }}' "
              "AND seen_at < '{{ window_end.isoformat() }}' AND note <> 'it''s excluded'")
IAM_ROLE = "arn:aws:iam::123456789012:role/redshift-unload"


@pytest.fixture(scope="module")
def warehouse(make_database):
    """Breast-cancer rows in a PostgreSQL table: the rows the warehouse stand-ins export."""
    uri = make_database("mlp_warehouse")
    table = breast_cancer_table()
    features = [n for n in table.column_names if n != "target"]
    columns = ", ".join(f'"{n}" double precision' for n in features)
    rows = table.to_pylist()
    with psycopg2.connect(uri) as conn, conn.cursor() as cur:
        cur.execute(f"CREATE TABLE patients ({columns}, target bigint, note text, seen_at timestamptz)")
        for i, row in enumerate(rows):
            day = "2026-01-01" if i < 500 else "2026-01-05"
            cur.execute(f"INSERT INTO patients VALUES ({', '.join(['%s'] * (len(features) + 3))})",
                        [*(row[n] for n in features), row["target"], "ok" if i % 50 else "it's excluded", f"{day}T10:00:00Z"])
    return {"dsn": uri, "features": features}


@pytest.fixture
def redshift(warehouse, s3_bucket, monkeypatch):
    return RedshiftStandIn(monkeypatch, warehouse["dsn"])


def redshift_extract(bucket, **kwargs):
    return RedshiftToParquetOperator(task_id="extract", sql=WINDOW_SQL, snapshot_root=f"s3://{bucket}/snapshots",
                                     iam_role=IAM_ROLE, database="analytics", cluster_identifier="ml-cluster",
                                     db_user="ml_reader", region_name="us-east-1", poll_interval=1, **kwargs)


def run(op, context):
    op.render_template_fields(context)
    return op.execute(context)


def test_unload_quotes_the_query_for_redshift():
    assert unload_statement("SELECT 'a' AS x, '\\d' AS y;", "s3://b/p/w-1", IAM_ROLE) == (
        "UNLOAD ('SELECT \\'a\\' AS x, \\'\\\\d\\' AS y') TO 's3://b/p/w-1/part-' "
        f"IAM_ROLE '{IAM_ROLE}' FORMAT AS PARQUET")


def test_redshift_unload_becomes_a_verified_snapshot_the_trainer_reads(redshift, warehouse, s3_bucket, make_context,
                                                                        tmp_path):
    result = run(redshift_extract(s3_bucket), make_context())
    (statement,) = redshift.statements
    assert statement.pop("ClientToken")  # botocore's idempotency token: a retried call runs once
    partition = "interval=20260101T030000Z--20260102T030000Z"
    manifest = artifacts.open_verified(result["uri"], kind="snapshot")
    (prefix,) = {f.path.split("/")[0] for f in manifest.files}
    staged = f"s3://{s3_bucket}/snapshots/{partition}/{prefix}"
    assert statement == {
        "ClusterIdentifier": "ml-cluster", "Database": "analytics", "DbUser": "ml_reader",
        "StatementName": "extract-manual__test", "WithEvent": False,
        "Sql": ("UNLOAD ('SELECT * FROM patients WHERE seen_at >= \\'2026-01-01T03:00:00+00:00\\' AND seen_at < "
                "\\'2026-01-02T03:00:00+00:00\\' AND note <> \\'it\\'\\'s excluded\\'') "
                f"TO '{staged}/part-' IAM_ROLE '{IAM_ROLE}' FORMAT AS PARQUET")}
    described = boto3.client("redshift-data", region_name="us-east-1").describe_statement(
        Id=manifest.lineage["source_statement_id"])
    assert described["Status"] == "FINISHED" and described["QueryString"] == statement["Sql"]
    # two slices -> two files, Redshift's names, one manifest over both
    assert sorted(f.name for f in manifest.files) == ["part-0000_part_00.parquet", "part-0001_part_00.parquet"]
    expected_rows = sum(1 for i in range(500) if i % 50)
    assert result["row_count"] == manifest.row_count == expected_rows and result["partition"] == partition
    assert manifest.lineage["source"] == "redshift" and manifest.lineage["run_id"] == "manual__test"
    _, table = read_snapshot(result["uri"])
    assert table.num_rows == expected_rows
    model = train.train(result["uri"], str(tmp_path / "model"), train.parse_config(
        {"estimator": "HistGradientBoostingClassifier", "target": "target", "exclude": ["note", "seen_at"],
         "params": {"max_iter": 10}}))
    assert artifacts.read_manifest(model["model_uri"]).extra["snapshot_digest"] == manifest.digest


def test_an_empty_unload_commits_nothing_and_keeps_the_previous_snapshot(redshift, s3_bucket, make_context):
    first = run(redshift_extract(s3_bucket), make_context())
    empty = redshift_extract(s3_bucket)
    empty.sql = WINDOW_SQL + " AND 1 = 0"
    with pytest.raises(EmptyExtractError, match="holds no rows"):
        run(empty, make_context())
    assert artifacts.open_verified(first["uri"]).digest == first["digest"]
    skipping = redshift_extract(s3_bucket, skip_when_empty=True)
    skipping.sql = empty.sql
    from airflow.sdk.exceptions import AirflowSkipException

    with pytest.raises(AirflowSkipException, match="holds no rows"):
        run(skipping, make_context())
    assert artifacts.open_verified(first["uri"]).digest == first["digest"]


def test_a_wrong_schema_fails_naming_the_columns_and_commits_nothing(redshift, s3_bucket, make_context):
    op = redshift_extract(s3_bucket, expected_columns=["target", "no_such_feature"])
    with pytest.raises(SchemaMismatchError, match="missing columns \\['no_such_feature'\\]"):
        run(op, make_context())
    assert not artifacts.manifest_exists(f"s3://{s3_bucket}/snapshots/interval=20260101T030000Z--20260102T030000Z")


def test_a_failed_statement_fails_the_task_with_the_databases_error(redshift, s3_bucket, make_context):
    op = redshift_extract(s3_bucket)
    op.sql = "SELECT * FROM no_such_table"
    with pytest.raises(Exception, match="no_such_table"):
        run(op, make_context())


# ---------------------------------------------------------------------------------------- BigQuery
@pytest.fixture
def bigquery(warehouse, gcs_fs, monkeypatch):
    from tests.cloud_standins import BigQueryStandIn

    monkeypatch.setenv("AIRFLOW_CONN_GOOGLE_CLOUD_DEFAULT", json.dumps({
        "conn_type": "google_cloud_platform", "extra": {"project": "ml-project"}}))
    stand_in = BigQueryStandIn(monkeypatch, warehouse["dsn"])
    yield stand_in
    stand_in.close()


def bigquery_extract(bucket, root="snapshots", **kwargs):
    from operators.extract.bigquery_to_parquet import BigQueryToParquetOperator

    return BigQueryToParquetOperator(task_id="extract", sql=WINDOW_SQL, snapshot_root=f"gs://{bucket}/{root}",
                                     project_id="ml-project", scratch_dataset="ml_scratch", location="EU", **kwargs)


def test_bigquery_query_then_export_becomes_a_verified_snapshot_the_trainer_reads(bigquery, gcs_emulator,
                                                                                   make_context, tmp_path):
    result = run(bigquery_extract(gcs_emulator.bucket), make_context(run_id="scheduled__1"))
    manifest = artifacts.open_verified(result["uri"], kind="snapshot")
    (prefix,) = {f.path.split("/")[0] for f in manifest.files}
    query_job, export_job = bigquery.requests
    table = query_job["configuration"]["query"]["destinationTable"]
    assert table["projectId"] == "ml-project" and table["datasetId"] == "ml_scratch"
    assert table["tableId"].startswith("ml_extract_test_dag_extract_")
    assert query_job["configuration"] == {
        "query": {"query": "SELECT * FROM patients WHERE seen_at >= '2026-01-01T03:00:00+00:00' AND seen_at < "
                           "'2026-01-02T03:00:00+00:00' AND note <> 'it''s excluded'",
                  "useLegacySql": False, "destinationTable": table, "writeDisposition": "WRITE_TRUNCATE",
                  "createDisposition": "CREATE_IF_NEEDED"},
        "labels": {"ml-pipelines-task": "extract"}}
    assert query_job["jobReference"]["projectId"] == "ml-project" and query_job["jobReference"]["location"] == "EU"
    assert export_job["configuration"] == {
        "extract": {"sourceTable": table, "destinationFormat": "PARQUET", "compression": "SNAPPY",
                    "destinationUris": [f"gs://{gcs_emulator.bucket}/snapshots/{result['partition']}/{prefix}/part-*.parquet"]},
        "labels": {"ml-pipelines-task": "extract"}}
    assert bigquery.deleted == [f"/bigquery/v2/projects/ml-project/datasets/ml_scratch/tables/{table['tableId']}"]
    assert sorted(f.name for f in manifest.files) == ["part-000000000000.parquet", "part-000000000001.parquet"]
    expected_rows = sum(1 for i in range(500) if i % 50)
    assert result["row_count"] == expected_rows and manifest.lineage["source"] == "bigquery"
    assert manifest.lineage["source_export_job"] == export_job["jobReference"]["jobId"]
    model = train.train(result["uri"], str(tmp_path / "model"), train.parse_config(
        {"estimator": "HistGradientBoostingClassifier", "target": "target", "exclude": ["note", "seen_at"],
         "params": {"max_iter": 10}}))
    assert artifacts.read_manifest(model["model_uri"]).extra["snapshot_digest"] == manifest.digest


def test_a_failed_bigquery_job_fails_the_task_and_commits_nothing(bigquery, gcs_emulator, make_context):
    op = bigquery_extract(gcs_emulator.bucket, root="failed-snapshots")
    op.sql = "SELECT * FROM no_such_table"
    with pytest.raises(Exception, match="no_such_table"):
        run(op, make_context())
    assert not artifacts.manifest_exists(f"gs://{gcs_emulator.bucket}/failed-snapshots/interval=20260101T030000Z--20260102T030000Z")
    assert len(bigquery.deleted) == 1  # the scratch table is dropped whatever happened


def test_an_unknown_source_names_the_ones_there_are():
    from operators.extract.sql_to_parquet import extract_operator

    with pytest.raises(ValueError, match="source must be one of \\('sql', 'redshift', 'bigquery'\\)"):
        extract_operator("snowflake", conn_id="x", task_id="extract", sql="SELECT 1", snapshot_root="s3://b/s")


def test_export_files_that_are_not_parquet_or_disagree_on_schema_are_refused(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from ml import artifacts

    pq.write_table(pa.table({"x": [1.0], "label": [0]}), tmp_path / "part-0.parquet")
    pq.write_table(pa.table({"x": ["a"], "label": [0]}), tmp_path / "part-1.parquet")
    (tmp_path / "manifest").write_text("a warehouse's own listing")
    entry = lambda name: artifacts.FileEntry(name, "0" * 64, 1)  # noqa: E731
    op = redshift_extract("bucket")
    schema, rows = op._footers(str(tmp_path), [entry("part-0.parquet")])
    assert schema.names == ["x", "label"] and rows == 1
    with pytest.raises(artifacts.ArtifactCorruptError, match="part-1.parquet has schema x: string"):
        op._footers(str(tmp_path), [entry("part-0.parquet"), entry("part-1.parquet")])
    with pytest.raises(artifacts.ArtifactCorruptError, match="manifest from the export is not Parquet"):
        op._footers(str(tmp_path), [entry("manifest")])
