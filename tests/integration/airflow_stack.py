"""One real Airflow for an integration test module: PostgreSQL databases for its metadata, the
seeded source and the MLflow registry, started by the launcher `make airflow` uses, and the demo
endpoint stopped with it. Each module names its own databases so modules never share state."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

import psycopg2
from mlflow.tracking import MlflowClient

from demo.local_airflow import LocalAirflow, free_port


@contextlib.contextmanager
def running_airflow(make_database, demo: Path, prefix: str, *, days: int, model: str, endpoint: str,
                    extra_env: dict[str, str] | None = None, password: str | None = None, workers: int = 0,
                    broker_db: int = 15) -> Iterator[dict]:
    """Yields ``{"af", "demo", "source", "registry", "databases"}``; DAGs are paused at creation,
    so each test unpauses what it runs and watches it from its start. ``password`` goes into the
    source's and the registry's URIs (a server with trust auth ignores it): a secret to look for.
    ``databases``: libpq URIs, without that password, of the metadata and registry databases.
    ``workers``: the CeleryExecutor with that many workers (and a training worker) on the local
    Redis, database ``broker_db`` of it, emptied first: no message of an earlier stack is delivered."""
    databases = {"metadata": make_database(f"{prefix}_meta"), "registry": make_database(f"{prefix}_mlflow")}
    metadata = databases["metadata"].replace("postgresql://", "postgresql+psycopg2://")
    source = with_password(make_database(f"{prefix}_source"), password)
    registry = with_password(databases["registry"], password).replace("postgresql://", "postgresql+psycopg2://")
    from demo.seed_source import seed

    with psycopg2.connect(source) as conn:
        for _ in range(days):
            seed(conn, "%s", "TIMESTAMPTZ")
    broker = f"redis://127.0.0.1:6379/{broker_db}"
    if workers:
        import redis

        redis.Redis.from_url(broker).flushdb()
    local = LocalAirflow(demo, port=free_port(), metadata_uri=metadata, workers=workers, broker_url=broker, extra_env={
        "AIRFLOW_CONN_ML_SOURCE": source.replace("postgresql://", "postgres://"),
        "AIRFLOW_CONN_MLFLOW_DEFAULT": json.dumps({"conn_type": "generic", "extra": {"tracking_uri": registry}}),
        "ML_MODEL_NAME": model,
        "ML_ENDPOINT": endpoint,
        "ML_RETRY_DELAY_SECONDS": "1",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
        **(extra_env or {}),
    })
    local.start()
    try:
        yield {"af": local, "demo": demo, "source": source, "registry": MlflowClient(tracking_uri=registry),
               "databases": databases}
    finally:
        local.stop()
        from operators.deploy.targets.local import LocalServerTarget

        LocalServerTarget(endpoint, state_dir=str(demo / "endpoints" / endpoint)).stop()


def with_password(uri: str, password: str | None) -> str:
    """``uri`` with ``password`` for its user, unless it has none to add or already has one."""
    scheme, rest = uri.split("://", 1)
    userinfo, at, hostpart = rest.partition("@")
    if not password or not at or ":" in userinfo:
        return uri
    return f"{scheme}://{userinfo}:{password}@{hostpart}"
