"""SqlToParquetOperator against real databases: PostgreSQL (ADBC/COPY path) and SQLite (DB-API path)."""

from __future__ import annotations

import math
import sqlite3

import psycopg2
import pyarrow.compute as pc
import pytest
from airflow.sdk import Asset

from ml import artifacts
from ml.snapshots import read_snapshot
from operators.extract.sql_to_parquet import EmptyExtractError, SchemaMismatchError, SqlToParquetOperator

WINDOW_SQL = "SELECT * FROM events WHERE event_time >= '{{ data_interval_start.isoformat() }}' " \
             "AND event_time < '{{ data_interval_end.isoformat() }}' ORDER BY id"


def run(op: SqlToParquetOperator, context) -> dict:
    op.render_template_fields(context)
    return op.execute(context)


@pytest.fixture
def pg_source(make_database, monkeypatch):
    uri = make_database("mlp_source")
    conn = psycopg2.connect(uri)
    with conn, conn.cursor() as cur:
        cur.execute("""
            CREATE TABLE events (id bigint, x double precision, note text, n integer, flag boolean,
                                 event_time timestamptz);
            INSERT INTO events VALUES
              (1, 1.5, 'a', 10, true, '2026-01-01T04:00:00Z'),
              (2, 'NaN', '', NULL, false, '2026-01-01T05:00:00Z'),
              (3, NULL, NULL, 30, NULL, '2026-01-01T06:00:00Z'),
              (4, 4.5, 'd', 40, true, '2026-01-02T04:00:00Z');
        """)
    conn.close()
    monkeypatch.setenv("AIRFLOW_CONN_PG_SOURCE", uri.replace("postgresql://", "postgres://"))
    return uri


@pytest.fixture
def sqlite_source(tmp_path, monkeypatch):
    path = tmp_path / "source.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE events (id INTEGER, x REAL, label TEXT, event_time TEXT)")
        rows = [(i, None if i < 30 else i / 2, None if i < 45 else f"l{i % 3}", f"2026-01-01T{3 + i // 60:02d}:{i % 60:02d}:00+00:00")
                for i in range(100)]
        conn.executemany("INSERT INTO events VALUES (?, ?, ?, ?)", rows)
    monkeypatch.setenv("AIRFLOW_CONN_LITE_SOURCE", f'{{"conn_type": "sqlite", "host": "{path}"}}')
    return path


def test_postgres_extract_keeps_types_nan_null_and_empty_string_apart(pg_source, tmp_path, make_context):
    op = SqlToParquetOperator(task_id="extract", conn_id="pg_source", sql=WINDOW_SQL,
                              snapshot_root=f"file://{tmp_path}/snapshots")
    result = run(op, make_context())
    assert result["uri"] == f"file://{tmp_path}/snapshots/interval=20260101T030000Z--20260102T030000Z"
    assert result["row_count"] == 3  # the row of 2026-01-02 is outside the interval
    manifest, table = read_snapshot(result["uri"])
    assert manifest.digest == result["digest"]
    assert {f.name: str(f.type) for f in table.schema} == {
        "id": "int64", "x": "double", "note": "string", "n": "int32", "flag": "bool",
        "event_time": "timestamp[us, tz=UTC]"}
    x = table.column("x").to_pylist()
    assert x[0] == 1.5 and math.isnan(x[1]) and x[2] is None
    assert table.column("note").to_pylist() == ["a", "", None]
    assert table.column("n").to_pylist() == [10, None, 30]
    assert manifest.lineage["source_query"].startswith("SELECT * FROM events WHERE event_time >= '2026-01-01T03:00:00+00:00'")
    assert manifest.lineage["data_interval_end"] == "2026-01-02T03:00:00+00:00"


def test_rerunning_an_interval_leaves_exactly_one_snapshot(pg_source, tmp_path, make_context):
    root = tmp_path / "snapshots"
    op = SqlToParquetOperator(task_id="extract", conn_id="pg_source", sql=WINDOW_SQL, snapshot_root=str(root))
    first = run(op, make_context())
    second = run(op, make_context(run_id="manual__again"))
    assert first["uri"] == second["uri"] and first["digest"] == second["digest"]
    partitions = list(root.iterdir())
    assert len(partitions) == 1
    assert sorted(p.name.startswith("w-") for p in partitions[0].iterdir()) == [False, True]  # manifest + one write
    assert artifacts.open_verified(second["uri"]).lineage["run_id"] == "manual__again"


def test_empty_extract_fails_clearly_and_keeps_the_previous_snapshot(pg_source, tmp_path, make_context):
    op = SqlToParquetOperator(task_id="extract", conn_id="pg_source", sql=WINDOW_SQL, snapshot_root=str(tmp_path))
    good = run(op, make_context())
    conn = psycopg2.connect(pg_source)
    with conn, conn.cursor() as cur:
        cur.execute("DELETE FROM events")
    conn.close()
    with pytest.raises(EmptyExtractError, match="query returned no rows for interval=20260101T030000Z--20260102T030000Z"):
        run(op, make_context())
    assert artifacts.open_verified(good["uri"]).digest == good["digest"]
    with pytest.raises(EmptyExtractError):
        run(op, make_context(start="2030-01-01T03:00:00+00:00", end="2030-01-02T03:00:00+00:00"))
    assert not (tmp_path / "interval=20300101T030000Z--20300102T030000Z").exists() or not artifacts.manifest_exists(
        str(tmp_path / "interval=20300101T030000Z--20300102T030000Z"))
    # where an empty interval is normal (daily scoring), the task is skipped, saying why
    skipping = SqlToParquetOperator(task_id="extract", conn_id="pg_source", sql=WINDOW_SQL,
                                    snapshot_root=str(tmp_path), skip_when_empty=True)
    from airflow.sdk.exceptions import AirflowSkipException

    with pytest.raises(AirflowSkipException, match="query returned no rows for interval=20260101T030000Z"):
        run(skipping, make_context())
    assert artifacts.open_verified(good["uri"]).digest == good["digest"]


@pytest.mark.parametrize(
    "expected,message",
    [
        (["id", "x", "note", "n", "flag", "event_time", "label"], "missing columns ['label']"),
        (["id", "x", "note", "n", "flag"], "unexpected columns ['event_time']"),
        ({"id": "int64", "x": "float", "note": "string", "n": "int32", "flag": "bool",
          "event_time": "timestamp[us, tz=UTC]"}, "x: expected float, got double"),
    ],
)
def test_schema_mismatch_names_the_difference(pg_source, tmp_path, make_context, expected, message):
    op = SqlToParquetOperator(task_id="extract", conn_id="pg_source", sql=WINDOW_SQL, snapshot_root=str(tmp_path),
                              expected_columns=expected)
    with pytest.raises(SchemaMismatchError, match=message.replace("[", r"\[").replace("]", r"\]")):
        run(op, make_context())
    assert not any(tmp_path.rglob("manifest.json"))


def test_matching_expected_columns_pass(pg_source, tmp_path, make_context):
    op = SqlToParquetOperator(task_id="extract", conn_id="pg_source", sql=WINDOW_SQL, snapshot_root=str(tmp_path),
                              expected_columns=["event_time", "flag", "n", "note", "x", "id"])
    assert run(op, make_context())["row_count"] == 3


def test_sqlite_generic_path_streams_batches_and_settles_late_types(sqlite_source, tmp_path, make_context):
    op = SqlToParquetOperator(task_id="extract", conn_id="lite_source", sql=WINDOW_SQL, snapshot_root=str(tmp_path),
                              batch_rows=10)  # the first 3 batches have x all NULL, 4 have label all NULL
    result = run(op, make_context())
    manifest, table = read_snapshot(result["uri"])
    assert result["row_count"] == 100
    assert str(table.schema.field("x").type) == "double"
    assert str(table.schema.field("label").type) == "string"
    assert table.column("x").null_count == 30 and table.column("label").null_count == 45
    assert pc.sum(table.column("id")).as_py() == sum(range(100))


def test_a_new_part_file_every_rows_per_file_rows_and_readers_see_them_all(sqlite_source, tmp_path, make_context):
    op = SqlToParquetOperator(task_id="extract", conn_id="lite_source", sql=WINDOW_SQL, snapshot_root=str(tmp_path),
                              batch_rows=10, rows_per_file=30)
    result = run(op, make_context())
    manifest, table = read_snapshot(result["uri"])
    assert sorted(e.name for e in manifest.files) == [f"part-{i:05d}.parquet" for i in range(4)]  # 30+30+30+10
    assert table.column("id").to_pylist() == list(range(100))  # in order, each row once
    with pytest.raises(ValueError, match="rows_per_file"):
        SqlToParquetOperator(task_id="x", conn_id="lite_source", sql="SELECT 1", snapshot_root=str(tmp_path),
                             rows_per_file=0)


def test_asset_event_carries_uri_digest_and_row_count(sqlite_source, tmp_path, make_context):
    asset = Asset(name="events.snapshots", uri=f"file://{tmp_path}")
    op = SqlToParquetOperator(task_id="extract", conn_id="lite_source", sql=WINDOW_SQL, snapshot_root=str(tmp_path),
                              outlets=[asset])
    context = make_context()
    result = run(op, context)
    assert context["outlet_events"][asset].extra == {
        "uri": result["uri"], "digest": result["digest"], "row_count": 100}


def test_partition_falls_back_to_run_id_without_interval(sqlite_source, tmp_path, make_context):
    op = SqlToParquetOperator(task_id="extract", conn_id="lite_source", sql="SELECT * FROM events",
                              snapshot_root=str(tmp_path))
    result = run(op, make_context(start=None, end=None, run_id="manual__2026-03-01T00:00:00+00:00"))
    assert result["uri"].endswith("/run=manual__2026-03-01T00_00_00_00_00")


def test_a_run_without_data_interval_extracts_up_to_its_run_after(pg_source, tmp_path, make_context):
    """A REST trigger with logical_date null (or an asset-triggered run) has no data interval:
    the SQL's window_end is the run's run_after, the window has no start, and the run gets its
    own partition."""
    sql = "SELECT id FROM events WHERE event_time < '{{ window_end.isoformat() }}' ORDER BY id"
    op = SqlToParquetOperator(task_id="extract", conn_id="pg_source", sql=sql, snapshot_root=str(tmp_path))
    context = make_context(start=None, end=None, run_id="manual__2026-11-23T10:00:00+00:00",
                           run_after="2026-01-01T05:30:00+00:00")
    result = run(op, context)
    assert result["row_count"] == 2 and result["uri"].endswith("/run=manual__2026-11-23T10_00_00_00_00")
    lineage = artifacts.open_verified(result["uri"], kind="snapshot").lineage
    assert lineage["window_start"] is None and lineage["window_end"] == "2026-01-01T05:30:00+00:00"
    # With a data interval the window is the interval.
    op = SqlToParquetOperator(task_id="extract", conn_id="pg_source", sql=sql, snapshot_root=str(tmp_path))
    assert run(op, make_context())["row_count"] == 3


def test_an_asset_alias_outlet_records_the_asset_named_at_run_time(sqlite_source, tmp_path, make_context):
    from airflow.sdk import AssetAlias

    alias = AssetAlias("pipeline.snapshots")
    added = []
    op = SqlToParquetOperator(task_id="extract", conn_id="lite_source", sql=WINDOW_SQL,
                              snapshot_root=str(tmp_path / "other_model"), asset_name="{{ params.model }}.snapshots",
                              outlets=[alias])
    context = make_context()
    context["params"] = {"model": "other_model"}
    context["outlet_events"][alias].add = lambda asset, extra: added.append((asset, extra))
    result = run(op, context)
    ((asset, extra),) = added
    assert asset.name == "other_model.snapshots" and asset.uri == str(tmp_path / "other_model")
    assert extra == {"uri": result["uri"], "digest": result["digest"], "row_count": 100}


def test_a_failure_while_writing_parquet_stops_the_read_and_is_raised(tmp_path):
    """The Parquet writer thread fails on a batch (here a type that does not match the schema):
    the writer's error is raised on the reading side (which never blocks on a full queue), and
    nothing half-written is kept."""
    import pyarrow as pa

    from ml import artifacts

    op = SqlToParquetOperator(task_id="extract", conn_id="x", sql="SELECT 1", snapshot_root=str(tmp_path),
                              batch_rows=2)
    schema = pa.schema([("x", pa.float64())])
    def batches():
        for values in ([1.0, 2.0], ["a", "b"], *([[3.0, 4.0]] * 20)):
            yield pa.record_batch([pa.array(values)], names=["x"])

    writer = artifacts.ArtifactWriter(str(tmp_path / "snap"), "snapshot")
    with pytest.raises((pa.ArrowInvalid, pa.ArrowTypeError, ValueError)):
        op._write_parquet(writer, schema, batches())
    writer.abort()
    assert not artifacts.manifest_exists(str(tmp_path / "snap"))


def test_an_unknown_extract_source_names_the_ones_there_are_and_no_time_to_extract_to_fails():
    from airflow.sdk.exceptions import AirflowException

    from operators.extract.sql_to_parquet import extract_operator, extraction_window

    with pytest.raises(ValueError, match=r"source must be one of .*got 'oracle' \(set ML_EXTRACT_FROM\)"):
        extract_operator("oracle", conn_id="x", task_id="extract")
    with pytest.raises(AirflowException, match="neither a data interval nor a run_after time"):
        extraction_window({"data_interval_start": None, "data_interval_end": None, "dag_run": None})
