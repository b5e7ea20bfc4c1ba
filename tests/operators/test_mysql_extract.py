"""SqlToParquetOperator against the local MariaDB through the mysql provider: awkward types
round-trip exactly into a snapshot (the server's default time zone set away from UTC while it
runs), a zero date fails naming the column and the fix, and the trainer trains on the snapshot."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from decimal import Decimal

import pytest

from ml import artifacts
from ml.snapshots import read_snapshot
from operators.extract.sql_to_parquet import SqlToParquetOperator

MYSQLdb = pytest.importorskip("MySQLdb")
UTC = dt.timezone.utc

AWKWARD = """
CREATE TABLE awkward (
  id INT PRIMARY KEY, d DECIMAL(38,10), dt DATETIME(6), ts TIMESTAMP(6) NULL DEFAULT NULL,
  txt VARCHAR(100) CHARACTER SET utf8mb4, flag TINYINT(1), b BIT(1), bits BIT(12), j JSON,
  u BIGINT UNSIGNED, i BIGINT, f FLOAT, x DOUBLE, day DATE, t TIME(6), y YEAR, blob_ VARBINARY(8),
  label INT)
"""
ROWS = [
    (1, "1234567890123456789012345678.0123456789", "2024-02-29 23:59:59.999999", "2024-03-31 02:30:00.123456",
     "😀 日本語 中文", 1, 1, 0xABC, '{"a": [1, 2.5, "x"]}', 18446744073709551615, -9223372036854775808, 0.1, 0.1,
     "2024-01-01", "-838:59:59.000000", 2155, b"\x00\xffab", 1),
    (2, "-0.0000000001", "1000-01-01 00:00:00", "1970-01-01 05:30:01", "", 0, 0, 0, "null", 0,
     9223372036854775807, -3.5, -1e308, "1000-01-01", "00:00:00.000001", 1901, b"", 0),
    (3, None, None, None, None, None, None, None, None, None, None, None, None, None, None, None, None, 1),
]


def connect(db: str | None = None, zone: str = "+05:30"):
    conn = MYSQLdb.connect(host="127.0.0.1", user="root", passwd="", charset="utf8mb4", **({"db": db} if db else {}))
    conn.cursor().execute(f"SET time_zone = '{zone}'")  # the rows are written in India's zone
    return conn


@pytest.fixture
def mariadb_source(monkeypatch):
    db = f"mlp_{uuid.uuid4().hex[:10]}"
    try:
        admin = connect()
    except MYSQLdb.OperationalError as exc:
        pytest.fail(f"MariaDB is not running on 127.0.0.1:3306 ({exc}); see README, 'Services'")
    admin.cursor().execute(f"CREATE DATABASE {db}")
    conn = connect(db)
    cur = conn.cursor()
    cur.execute(AWKWARD)
    cur.executemany("INSERT INTO awkward VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s,"
                    " %s)", [r[:6] + ((None if r[6] is None else bytes([r[6]])),
                                      (None if r[7] is None else r[7].to_bytes(2, "big"))) + r[8:] for r in ROWS])
    # rows for training: every awkward type again, 120 of them
    cur.execute("""INSERT INTO awkward SELECT seq + 10, seq * 1000.0000000001, '2025-06-01' + INTERVAL seq HOUR,
                   '2025-06-01' + INTERVAL seq MINUTE, CONCAT('類', seq % 3), seq % 2, seq % 2, seq, JSON_OBJECT('k', seq % 4),
                   18446744073709551615 - seq, CAST(seq AS SIGNED) - 60, seq / 7, seq / 3, '2025-01-01' + INTERVAL seq DAY,
                   SEC_TO_TIME(seq), 2000 + seq % 50, UNHEX('00'), (seq % 3 = 0) OR (seq > 90)
                   FROM seq_1_to_120""")
    conn.commit()
    conn.close()
    cur = admin.cursor()
    cur.execute("SELECT @@global.time_zone")
    zone = cur.fetchone()[0]
    cur.execute("SET GLOBAL time_zone = '+09:00'")  # a new session (the extract's) starts in Tokyo's zone
    monkeypatch.setenv("AIRFLOW_CONN_MY_SOURCE", json.dumps(
        {"conn_type": "mysql", "host": "127.0.0.1", "port": 3306, "login": "root", "schema": db}))
    yield db
    cur.execute(f"SET GLOBAL time_zone = '{zone}'")
    cur.execute(f"DROP DATABASE {db}")
    admin.close()


def extract(tmp_path, make_context, sql: str) -> dict:
    op = SqlToParquetOperator(task_id="extract", conn_id="my_source", sql=sql, snapshot_root=f"file://{tmp_path}/s",
                              batch_rows=2)  # several batches, so the batches' types must agree
    op.render_template_fields(make_context())
    return op.execute(make_context())


def test_awkward_types_round_trip_exactly(mariadb_source, tmp_path, make_context):
    result = extract(tmp_path, make_context, "SELECT * FROM awkward WHERE id < 10 ORDER BY id")
    manifest, table = read_snapshot(result["uri"])
    assert {f.name: str(f.type) for f in table.schema} == {
        "id": "int32", "d": "decimal128(38, 10)", "dt": "timestamp[us]", "ts": "timestamp[us, tz=UTC]",
        "txt": "string", "flag": "int8", "b": "bool", "bits": "uint64", "j": "string", "u": "uint64", "i": "int64",
        "f": "float", "x": "double", "day": "date32[day]", "t": "duration[us]", "y": "int16", "blob_": "binary",
        "label": "int32"}
    import numpy as np

    rows = table.to_pylist()
    assert rows[0] == {
        "id": 1, "d": Decimal("1234567890123456789012345678.0123456789"),
        "dt": dt.datetime(2024, 2, 29, 23, 59, 59, 999999),
        "ts": dt.datetime(2024, 3, 30, 21, 0, 0, 123456, tzinfo=UTC),  # 02:30:00.123456 in +05:30
        "txt": "😀 日本語 中文", "flag": 1, "b": True, "bits": 0xABC, "j": '{"a": [1, 2.5, "x"]}',
        "u": 18446744073709551615, "i": -9223372036854775808, "f": float(np.float32(0.1)), "x": 0.1,  # FLOAT is float32: the same float32
        "day": dt.date(2024, 1, 1), "t": -dt.timedelta(hours=838, minutes=59, seconds=59), "y": 2155,
        "blob_": b"\x00\xffab", "label": 1}
    assert rows[1]["d"] == Decimal("-0.0000000001") and rows[1]["x"] == -1e308
    assert rows[1]["ts"] == dt.datetime(1970, 1, 1, 0, 0, 1, tzinfo=UTC)
    assert rows[1]["dt"] == dt.datetime(1000, 1, 1) and rows[1]["day"] == dt.date(1000, 1, 1)
    assert rows[1]["t"] == dt.timedelta(microseconds=1) and rows[1]["i"] == 9223372036854775807
    assert rows[1]["txt"] == "" and rows[2]["txt"] is None  # the empty string is not NULL
    assert rows[1]["b"] is False and rows[1]["blob_"] == b""
    assert all(v is None for k, v in rows[2].items() if k not in ("id", "label"))
    artifacts.verify(manifest)


def test_a_zero_date_fails_naming_the_column_and_the_fix(mariadb_source, tmp_path, make_context):
    conn = connect(mariadb_source)
    cur = conn.cursor()
    cur.execute("SET SESSION sql_mode = ''")  # zero dates allowed, as on many old servers
    cur.execute("CREATE TABLE zeros (id INT, happened DATETIME, raw VARBINARY(4))")
    cur.execute("INSERT INTO zeros VALUES (1, '2024-01-01', 'a'), (2, '0000-00-00 00:00:00', 'b')")
    conn.commit()
    conn.close()
    with pytest.raises(ValueError, match=r"zero date.*'happened'.*NULLIF"):  # the binary path
        extract(tmp_path, make_context, "SELECT id, happened FROM zeros ORDER BY id")
    with pytest.raises(ValueError, match=r"column 'happened' holds the zero date '0000-00-00 00:00:00'.*NULLIF"):
        extract(tmp_path, make_context, "SELECT * FROM zeros ORDER BY id")  # VARBINARY: the text path
    assert not (tmp_path / "s").exists() or not list((tmp_path / "s").rglob("manifest.json"))


BINARY_SAFE = "SELECT id, d2, dt, txt, flag, u, i, f, x, day, y, label FROM awkward ORDER BY id"


def test_both_paths_give_the_same_snapshot_and_the_binary_one_is_taken_where_it_is_exact(
        mariadb_source, tmp_path, make_context, monkeypatch):
    """The columns the binary path reads (DECIMAL up to 28 digits, DATETIME, DATE, integers
    signed and unsigned at their limits, DOUBLE, YEAR, utf8mb4 text; FLOAT exactly only there) come out of it the
    same, type and value, as out of the text path; a result with any other column takes the text path."""
    import numpy as np

    from operators.extract import mysql_batches

    conn = connect(mariadb_source)
    conn.cursor().execute("ALTER TABLE awkward ADD COLUMN d2 DECIMAL(24, 6), ADD COLUMN d3 DECIMAL(28, 6)")
    conn.cursor().execute("UPDATE awkward SET d2 = CASE id WHEN 1 THEN 999999999999999999.999999 "
                          "WHEN 2 THEN -0.000001 ELSE id * 1.5 END, d3 = 9999999999999999999999.999999 WHERE id <> 3")
    conn.commit()
    conn.close()
    taken = []
    real, real_uri = mysql_batches._binary_batches, mysql_batches.binary_uri
    monkeypatch.setattr(mysql_batches, "_binary_batches", lambda *a: taken.append(a[1]) or real(*a))
    binary = read_snapshot(extract(tmp_path / "binary", make_context, BINARY_SAFE)["uri"])[1]
    assert taken == [BINARY_SAFE]
    monkeypatch.setattr(mysql_batches, "binary_uri", lambda hook: None)  # the text path
    text = read_snapshot(extract(tmp_path / "text", make_context, BINARY_SAFE)["uri"])[1]
    assert binary.schema == text.schema and str(binary.schema.field("d2").type) == "decimal128(24, 6)"
    assert binary.drop(["f"]).to_pylist() == text.drop(["f"]).to_pylist() and binary.num_rows == 123
    # FLOAT: the binary path has the stored float32; MariaDB's text protocol prints 6 digits
    assert binary.column("f")[3].as_py() == float(np.float32(1 / 7)) and text.column("f")[3].as_py() == float(
        np.float32(0.142857))
    assert binary.column("d2")[0].as_py() == Decimal("999999999999999999.999999")
    monkeypatch.setattr(mysql_batches, "binary_uri", real_uri)
    taken.clear()
    for other in ("SELECT id, d FROM awkward", "SELECT id, d3 FROM awkward", "SELECT id, ts FROM awkward", "SELECT id, b FROM awkward",
                  "SELECT id, j FROM awkward", "SELECT id, blob_ FROM awkward"):
        extract(tmp_path / str(len(taken)) / other.split()[2].strip(","), make_context, other)
    # DECIMAL(38, 10) and (28, 6) (over 18 digits before the point), TIMESTAMP, BIT, JSON (a _bin
    # collation), VARBINARY: the text path
    assert taken == []


def test_the_trainer_trains_on_the_snapshot(mariadb_source, tmp_path, make_context):
    from ml import train
    from ml.model_io import load_verified_model

    result = extract(tmp_path, make_context, "SELECT d, dt, ts, txt, flag, b, bits, j, u, i, f, x, day, y, label "
                                             "FROM awkward WHERE id >= 10 ORDER BY id")
    train.train(result["uri"], str(tmp_path / "model"), train.parse_config(
        {"estimator": "HistGradientBoostingClassifier", "target": "label", "params": {"max_iter": 20}}))
    manifest, model = load_verified_model(str(tmp_path / "model"))
    assert {c["name"] for c in manifest.schema} == {"d", "dt", "ts", "txt", "flag", "b", "bits", "j", "u", "i", "f",
                                                    "x", "day", "y"}
    _, table = read_snapshot(result["uri"])
    predicted = model.predict(table.drop(["label"]))
    assert len(predicted) == 120 and set(predicted) <= {0, 1}
    assert manifest.extra["metrics"]["accuracy"] > 0.7  # label is a function of the numbers


def test_connections_the_binary_path_cannot_serve_take_another(mariadb_source, tmp_path, make_context, monkeypatch):
    """SSL or IAM in the connection's extras: the text path (mysqlclient honours them); the
    mysql-connector-python client: the generic DB-API path, which reads the same rows."""
    from airflow.providers.mysql.hooks.mysql import MySqlHook

    from operators.extract import mysql_batches

    base = {"conn_type": "mysql", "host": "127.0.0.1", "port": 3306, "login": "root", "schema": mariadb_source}
    monkeypatch.setenv("AIRFLOW_CONN_MY_SSL", json.dumps({**base, "extra": {"ssl_mode": "DISABLED"}}))
    assert mysql_batches.binary_uri(MySqlHook(mysql_conn_id="my_ssl")) is None
    assert mysql_batches.binary_uri(MySqlHook(mysql_conn_id="my_source")) == \
        f"mysql://root:@127.0.0.1:3306/{mariadb_source}"
    monkeypatch.setenv("AIRFLOW_CONN_MY_SOURCE", json.dumps({**base, "extra": {"client": "mysql-connector-python"}}))
    result = extract(tmp_path, make_context, "SELECT id, txt, x FROM awkward WHERE id < 10 ORDER BY id")
    rows = read_snapshot(result["uri"])[1].to_pylist()
    assert [r["txt"] for r in rows] == ["😀 日本語 中文", "", None] and rows[1]["x"] == -1e308
