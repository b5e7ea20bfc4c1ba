"""`make airflow WORKERS=N`'s refusals and settings, before any process starts: SQLite cannot
back workers, a missing or wrong broker is named with the fix, and the workers' roles."""

from __future__ import annotations

import socket
import threading

import pytest

from demo.local_airflow import LocalAirflow, check_broker, free_port


def test_workers_on_sqlite_are_refused_naming_postgresql(tmp_path):
    with pytest.raises(ValueError, match="not SQLite: give a PostgreSQL URI"):
        LocalAirflow(tmp_path, workers=2)


def test_no_redis_is_named_with_how_to_get_one():
    with pytest.raises(RuntimeError, match=r"no Redis at 127.0.0.1:\d+ .*apt-get install redis-server"):
        check_broker(f"redis://127.0.0.1:{free_port()}/0")


def test_something_else_on_the_broker_port_is_refused():
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]

    def answer():
        conn, _ = server.accept()
        conn.recv(64)
        conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")
        conn.close()

    threading.Thread(target=answer, daemon=True).start()
    with pytest.raises(RuntimeError, match="did not answer PING as Redis does"):
        check_broker(f"redis://127.0.0.1:{port}/0")
    server.close()


def test_the_local_redis_answers():
    check_broker("redis://127.0.0.1:6379/0")  # make test needs it (README, "What a fresh machine needs")


def test_workers_split_by_role_and_share_the_metadata_for_results(tmp_path, monkeypatch):
    monkeypatch.setenv("ML_QUEUE_TRAINING", "gpu-training")
    af = LocalAirflow(tmp_path, metadata_uri="postgresql+psycopg2://u@db:5432/meta", workers=3,
                      broker_url="redis://broker:6379/3")
    assert af.workers == {"worker-1": (("default", "scoring", "deploy"), 2),
                          "worker-2": (("default", "scoring", "deploy"), 2),
                          "worker-3": (("default", "scoring", "deploy"), 2),
                          "trainer-1": (("gpu-training",), 1)}
    assert af.env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert af.env["AIRFLOW__CELERY__BROKER_URL"] == "redis://broker:6379/3"
    assert af.env["AIRFLOW__CELERY__RESULT_BACKEND"] == "db+postgresql+psycopg2://u@db:5432/meta"
    assert int(af.env["AIRFLOW__CORE__PARALLELISM"]) == 7  # every worker slot can be filled
    assert LocalAirflow(tmp_path / "local").env["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"


def test_an_unknown_kind_of_work_is_refused():
    from operators.workers import queue

    with pytest.raises(ValueError, match="unknown kind of work 'serving'"):
        queue("serving")


def test_the_celery_metadata_database_is_created_once_when_missing(postgres_server):
    import uuid

    import psycopg2

    from demo.local_airflow import create_database

    name = f"mlp_celery_meta_{uuid.uuid4().hex[:8]}"
    uri = postgres_server.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg2://") + f"/{name}"
    create_database(uri)
    create_database(uri)  # already there: nothing to do, no error
    conn = psycopg2.connect(postgres_server)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM pg_database WHERE datname = %s", (name,))
            assert cur.fetchone()[0] == 1
            cur.execute(f'DROP DATABASE "{name}"')
    finally:
        conn.close()
