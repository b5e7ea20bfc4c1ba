"""Edges a pipeline meets on a bad day, each with the message an operator acts on: an SQL
source whose later rows change a column's type, an endpoint answering an error page that is not
JSON, a Slack outage while the deploy ledger is recorded, a cloud training job that ends
without leaving a model."""

from __future__ import annotations

import http.server
import sqlite3
import threading
from types import SimpleNamespace
from unittest import mock

import pytest
from airflow.sdk.exceptions import AirflowException

from tests.helpers import FakeTaskInstance


def test_a_column_whose_later_rows_change_type_fails_naming_the_fix(tmp_path):
    from operators.extract.sql_record_batches import SchemaDriftError, record_batches

    db = tmp_path / "src.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE t (id INTEGER, score)")  # no declared type: SQLite keeps what it is given
        conn.executemany("INSERT INTO t VALUES (?, ?)", [(i, float(i)) for i in range(4)] + [(4, "n/a")])
    hook = SimpleNamespace(get_conn=lambda: sqlite3.connect(db))
    with record_batches(hook, "SELECT id, score FROM t ORDER BY id", batch_rows=2) as (schema, batches):
        assert str(schema.field("score").type) == "double"
        with pytest.raises(SchemaDriftError, match="(?s)does not fit the column types of the first rows .*'n/a'.*"
                                                   "CAST the column to one type in the query"):
            list(batches)


def test_a_query_that_returns_no_rows_has_its_columns_as_strings(tmp_path):
    from operators.extract.sql_record_batches import record_batches

    db = tmp_path / "src.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE t (id INTEGER, name TEXT)")
    hook = SimpleNamespace(get_conn=lambda: sqlite3.connect(db))
    with record_batches(hook, "SELECT id, name FROM t", batch_rows=2) as (schema, batches):
        assert schema.names == ["id", "name"] and list(batches) == []


class ErrorPage(http.server.BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802 - http.server's name
        self.send_response(502)
        self.send_header("Content-Type", "text/html")
        self.end_headers()
        self.wfile.write(b"<html><body>502 Bad Gateway</body></html>")

    def log_message(self, *args):
        pass


def test_an_error_page_that_is_not_json_is_quoted_in_the_endpoint_error():
    from operators.deploy.endpoint_client import EndpointError, invoke

    server = http.server.HTTPServer(("127.0.0.1", 0), ErrorPage)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with pytest.raises(EndpointError, match=r"answered 502: <html><body>502 Bad Gateway") as raised:
            invoke(f"http://127.0.0.1:{server.server_port}", [[1.0]])
        assert raised.value.status == 502
    finally:
        server.shutdown()


def test_a_slack_outage_does_not_lose_the_ledger_entry(make_context, capfd):
    from operators.deploy.ledger import RecordLedgerOperator

    record = {"model": "churn", "endpoint": "prod", "outcome": "rolled_back", "version": "1", "failed_version": "2",
              "reason": "smoke test failed", "run_id": "r"}
    context = make_context()
    context["ti"] = FakeTaskInstance()
    context["ti"].xcom_push("ledger", record)
    op = RecordLedgerOperator(task_id="ledger", deploy_task_id="deploy")
    with mock.patch("operators.alerts.SlackAlert.notify", side_effect=ConnectionError("slack unreachable")):
        assert op.execute(context) == record
    assert "Slack alert not sent: slack unreachable" in "".join(capfd.readouterr())


def test_a_cloud_job_that_ends_without_a_model_fails_saying_so(tmp_path):
    from operators.training.trainer_command import trained_result

    with pytest.raises(AirflowException, match="the training job ended but left no model: .*no manifest"):
        trained_result(str(tmp_path / "model"), {"run_id": "r"})


def test_an_endpoint_nobody_listens_on_is_unreachable_without_a_status():
    import socket

    from operators.deploy.endpoint_client import EndpointError, invoke, ping

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    with pytest.raises(EndpointError, match=f"http://127.0.0.1:{port}/invocations unreachable") as raised:
        invoke(f"http://127.0.0.1:{port}", [[1.0]], timeout=2)
    assert raised.value.status is None
    assert ping(f"http://127.0.0.1:{port}") is None


def test_the_code_version_is_the_images_else_the_checkouts_commit_else_the_package_version(monkeypatch):
    from ml import __version__
    from operators.registry import lineage

    lineage.code_version.cache_clear()
    monkeypatch.setenv("ML_CODE_VERSION", "0.3.0+gabc")
    assert lineage.code_version() == "0.3.0+gabc"
    lineage.code_version.cache_clear()
    monkeypatch.delenv("ML_CODE_VERSION")
    with mock.patch("subprocess.run", side_effect=FileNotFoundError("git")):  # no git where it runs
        assert lineage.code_version() == __version__
    lineage.code_version.cache_clear()


def test_an_in_memory_or_unplaceable_sqlite_registry_needs_no_schema_lock(tmp_path):
    from operators.registry.mlflow_schema import _file_lock

    for uri in ("sqlite:///:memory:", f"sqlite:///{tmp_path}/no/such/dir/mlflow.db"):
        with _file_lock(uri):
            pass
    assert list(tmp_path.iterdir()) == []  # no lock file anywhere
    with _file_lock(f"sqlite:///{tmp_path}/mlflow.db"):
        assert (tmp_path / "mlflow.db.schema-lock").exists()


def test_a_snapshot_listing_no_parquet_or_other_rows_than_its_manifest_is_refused(tmp_path):
    import pyarrow as pa

    from ml import artifacts
    from ml.snapshots import read_snapshot

    writer = artifacts.ArtifactWriter(str(tmp_path / "a"), "snapshot")
    writer.write_bytes("notes.txt", b"no table here")
    writer.commit(schema=[], row_count=0, lineage={})
    with pytest.raises(artifacts.ArtifactCorruptError, match="snapshot manifest lists no .parquet file"):
        read_snapshot(str(tmp_path / "a"))
    import pyarrow.parquet as pq

    writer = artifacts.ArtifactWriter(str(tmp_path / "b"), "snapshot")
    with writer.open("part-0.parquet") as f:
        pq.write_table(pa.table({"x": [1, 2, 3]}), f)
    writer.commit(schema=[], row_count=5, lineage={})
    with pytest.raises(artifacts.ArtifactCorruptError, match="manifest says 5 rows, files hold 3"):
        read_snapshot(str(tmp_path / "b"))


def test_a_server_pid_is_alive_unless_gone_or_a_reaped_zombie():
    import subprocess
    import sys

    from operators.deploy.targets.local import _pid_alive

    assert _pid_alive(1)  # another user's process (or init): alive, even where signalling it is not allowed
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    import time

    deadline = time.monotonic() + 30
    while _pid_alive(child.pid) and time.monotonic() < deadline:  # exits, a zombie until reaped
        time.sleep(0.05)
    assert not _pid_alive(child.pid)  # reaped by the check itself: gone
    assert not _pid_alive(child.pid)


def test_an_endpoint_connection_without_an_admin_token_is_refused_naming_it():
    from operators.deploy.targets.local import LocalServerTarget

    with pytest.raises(ValueError, match="endpoint prod at http://models:8080: the connection needs the admin token"):
        LocalServerTarget("prod", url="http://models:8080")


def test_a_wait_in_task_that_is_not_seconds_is_refused_naming_the_variable(monkeypatch):
    from operators.deploy.steps import seconds_from_environment

    for given, seconds in (("", None), (" 0 ", 0.0), ("12.5", 12.5)):
        monkeypatch.setenv("ML_DEPLOY_WAIT_IN_TASK", given)
        assert seconds_from_environment("ML_DEPLOY_WAIT_IN_TASK") == seconds
    for bad in ("thirty", "-1", "nan"):
        monkeypatch.setenv("ML_DEPLOY_WAIT_IN_TASK", bad)
        with pytest.raises(ValueError, match=rf"ML_DEPLOY_WAIT_IN_TASK='{bad}': give a number of seconds >= 0"):
            seconds_from_environment("ML_DEPLOY_WAIT_IN_TASK")
