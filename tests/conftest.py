"""Shared fixtures: an isolated Airflow home, PostgreSQL, and the object-store stand-ins.

PostgreSQL, in order: ``ML_TEST_POSTGRES_DSN`` if set; else a server on 127.0.0.1:5432
(user ``$PGUSER``, or the current user); else a throwaway cluster started from the server
binaries (``initdb``/``pg_ctl`` on PATH or under /usr/lib/postgresql/*/bin). Each test
session works in databases it creates and drops.
"""

from __future__ import annotations

import getpass
import glob
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from types import SimpleNamespace

import pytest

REPO = Path(__file__).resolve().parent.parent
_AIRFLOW_HOME = tempfile.mkdtemp(prefix="ml-pipelines-airflow-")
os.environ.update(
    {
        "AIRFLOW_HOME": _AIRFLOW_HOME,
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{_AIRFLOW_HOME}/airflow.db",
    }
)
os.environ.pop("MLFLOW_TRACKING_URI", None)
# gcsfs >= 2026.10 probes each bucket's type over gRPC (60 s timeout per call); the GCS
# emulator speaks only the JSON API, so the tests use gcsfs' plain JSON-API filesystem.
os.environ["GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT"] = "false"


from demo.local_airflow import free_port  # noqa: E402 - one definition, shared with the launcher


def wait_for_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


# --------------------------------------------------------------------------- PostgreSQL
def _can_connect(dsn: str) -> bool:
    import psycopg2

    try:
        psycopg2.connect(dsn, connect_timeout=3).close()
        return True
    except psycopg2.OperationalError:
        return False


def _pg_bin(name: str) -> str | None:
    return shutil.which(name) or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)), None)


class ThrowawayPostgres:
    """A PostgreSQL cluster of its own, in a temporary folder (initdb, pg_ctl): the fallback server,
    and the database the registry drills stop and restart under a running registration."""

    def __init__(self):
        initdb, self.pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
        if not (initdb and self.pg_ctl):
            raise RuntimeError(
                "PostgreSQL's server binaries are needed: no initdb/pg_ctl on PATH or under /usr/lib/postgresql/*/bin "
                "(Debian/Ubuntu: apt-get install postgresql)")
        self.data = tempfile.mkdtemp(prefix="ml-pipelines-pg-")
        self.run_as: list[str] = []
        user = getpass.getuser()
        if os.geteuid() == 0:  # initdb refuses root: run the cluster as the 'postgres' system user
            shutil.chown(self.data, "postgres")
            self.run_as, user = ["runuser", "-u", "postgres", "--"], "postgres"
        self.port = free_port()
        subprocess.run([*self.run_as, initdb, "-D", self.data, "-A", "trust", "-U", user], check=True,
                       capture_output=True)
        self.dsn = f"postgresql://{user}@127.0.0.1:{self.port}/postgres"

    def start(self) -> ThrowawayPostgres:
        subprocess.run([*self.run_as, self.pg_ctl, "-D", self.data, "-l", f"{self.data}/log", "-w", "-o",
                        f"-p {self.port} -k {self.data} -c listen_addresses=127.0.0.1", "start"],
                       check=True, capture_output=True)
        return self

    def stop(self, mode: str = "immediate") -> None:
        """``immediate``: as a crash would, no clean shutdown of open sessions."""
        subprocess.run([*self.run_as, self.pg_ctl, "-D", self.data, "-m", mode, "-w", "stop"], capture_output=True)


def _start_throwaway_cluster(stack: list) -> str:
    try:
        cluster = ThrowawayPostgres().start()
    except RuntimeError as exc:
        pytest.exit(f"PostgreSQL is needed by the tests and there is no server on 127.0.0.1:5432. {exc}, or set "
                    "ML_TEST_POSTGRES_DSN=postgresql://user@host:port/db", returncode=3)
    stack.append(cluster.stop)
    return cluster.dsn


@pytest.fixture(scope="session")
def postgres_server():
    """A libpq URI of a maintenance database on a server the tests may create databases on."""
    cleanup: list = []
    dsn = os.environ.get("ML_TEST_POSTGRES_DSN")
    if not dsn:
        local = f"postgresql://{os.environ.get('PGUSER', getpass.getuser())}@127.0.0.1:5432/postgres"
        dsn = local if _can_connect(local) else _start_throwaway_cluster(cleanup)
    yield dsn
    for step in cleanup:
        step()


@pytest.fixture(scope="session")
def make_database(postgres_server):
    """Factory: a fresh database URI; all are dropped at the end of the session."""
    import psycopg2

    created: list[str] = []

    def make(prefix: str = "mlp_test") -> str:
        name = f"{prefix}_{uuid.uuid4().hex[:8]}"
        conn = psycopg2.connect(postgres_server)
        conn.autocommit = True
        conn.cursor().execute(f'CREATE DATABASE "{name}"')
        conn.close()
        created.append(name)
        return postgres_server.rsplit("/", 1)[0] + f"/{name}"

    yield make
    conn = psycopg2.connect(postgres_server)
    conn.autocommit = True
    for name in created:
        conn.cursor().execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    conn.close()


# --------------------------------------------------------------------------- object stores
@pytest.fixture(scope="session")
def moto_s3():
    """moto in server mode (real HTTP, real boto/s3fs clients): the stand-in for AWS."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": endpoint}
    yield SimpleNamespace(endpoint=endpoint, env=env)
    server.stop()


@pytest.fixture
def s3_bucket(moto_s3, monkeypatch):
    """A fresh bucket; the AWS_* environment points every client (s3fs too) at moto."""
    import boto3

    for k, v in moto_s3.env.items():
        monkeypatch.setenv(k, v)
    name = f"b-{uuid.uuid4().hex[:10]}"
    boto3.client("s3", endpoint_url=moto_s3.endpoint).create_bucket(Bucket=name)
    import fsspec

    fsspec.config.conf.pop("s3", None)
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()
    return name


@pytest.fixture(scope="session")
def gcs_emulator():
    """gcp-storage-emulator over HTTP: the stand-in for Google Cloud Storage."""
    from gcp_storage_emulator.server import create_server

    port = free_port()
    server = create_server("127.0.0.1", port, in_memory=True, default_bucket="ml-test")
    server.start()
    wait_for_port(port)
    yield SimpleNamespace(endpoint=f"http://127.0.0.1:{port}", bucket="ml-test")
    server.stop()


@pytest.fixture
def gcs_fs(gcs_emulator, monkeypatch):
    import gcsfs

    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_emulator.endpoint)
    gcsfs.GCSFileSystem.clear_instance_cache()
    return gcsfs.GCSFileSystem(endpoint_url=gcs_emulator.endpoint, token="anon", project="test")


# --------------------------------------------------------------------------- Airflow context
@pytest.fixture
def make_context():
    """A task context with what the operators read (what the task runner would pass)."""
    import pendulum

    def make(start="2026-01-01T03:00:00+00:00", end="2026-01-02T03:00:00+00:00", run_id="manual__test", dag_id="test_dag",
             run_after=None):
        s = pendulum.parse(start) if start else None
        e = pendulum.parse(end) if end else None
        after = pendulum.parse(run_after) if run_after else (e or pendulum.parse("2026-03-01T00:00:00+00:00"))
        outlet_events: dict = {}

        class Outlets(dict):
            def __missing__(self, key):
                self[key] = SimpleNamespace(extra={})
                return self[key]

        return {
            "dag": SimpleNamespace(dag_id=dag_id),
            "run_id": run_id,
            "logical_date": e,
            "data_interval_start": s,
            "data_interval_end": e,
            "outlet_events": Outlets(outlet_events),
            "dag_run": SimpleNamespace(run_id=run_id, run_after=after, data_interval_end=e),
            "params": {},
        }

    return make


@pytest.fixture
def python() -> str:
    return sys.executable


# --------------------------------------------------------------------------- running in parallel
# `make test` runs the suite on two pytest-xdist workers, then the tests marked `serial` alone:
# those assert latencies or run `make demo`'s whole script, which a second worker beside them
# would skew. Every test file is one unit of work (its module fixtures, such as a running
# Airflow, start once); the container tests are one unit together, since they share one
# container engine and its image builds.
def pytest_configure(config):
    config.addinivalue_line("markers", "serial: run alone, after the parallel part of `make test`")


def pytest_xdist_make_scheduler(config, log):
    from xdist.scheduler import LoadScopeScheduling

    class ByFile(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            return "tests/containers" if path.startswith("tests/containers/") else path

    return ByFile(config, log)
