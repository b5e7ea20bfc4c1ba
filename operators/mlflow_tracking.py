"""Where the MLflow registry is: an Airflow connection first, the environment second.

Connection ``mlflow_default`` (any conn type): ``extra.tracking_uri`` (e.g.
``sqlite:////path/mlflow.db``, ``postgresql://...``) or host/port/schema for an HTTP
tracking server, with login/password as basic auth. Without the connection,
``MLFLOW_TRACKING_URI``. Credentials stay in the connection: they are never logged.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from airflow.sdk.exceptions import AirflowException


@dataclass(frozen=True)
class MlflowTarget:
    tracking_uri: str
    registry_uri: str | None = None
    artifact_location: str | None = None  # for experiments this project creates

    def client(self):
        from mlflow.tracking import MlflowClient

        return MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.registry_uri)


def mlflow_target(conn_id: str | None = "mlflow_default") -> MlflowTarget:
    from operators.connections import optional_connection

    return target_from_connection(optional_connection(conn_id), conn_id)


def target_from_connection(conn, conn_id: str | None = "mlflow_default") -> MlflowTarget:
    """The registry a connection names (any Connection object: the task SDK's or the core's),
    or, with ``conn`` None, the one the environment names."""
    from operators.connections import http_url

    if conn is not None:
        extra = conn.extra_dejson
        uri = extra.get("tracking_uri") or http_url(conn)
        if not uri:
            raise AirflowException(
                f"Airflow connection {conn_id!r} has neither extra.tracking_uri nor a host; "
                f"set one of them to your MLflow tracking server or database URI"
            )
        if conn.login:  # HTTP basic auth for a tracking server, read by the MLflow client
            os.environ["MLFLOW_TRACKING_USERNAME"] = conn.login
            os.environ["MLFLOW_TRACKING_PASSWORD"] = conn.password or ""
        return MlflowTarget(uri, extra.get("registry_uri"), extra.get("artifact_location"))
    if uri := os.environ.get("MLFLOW_TRACKING_URI"):
        return MlflowTarget(uri, os.environ.get("MLFLOW_REGISTRY_URI"), os.environ.get("ML_MLFLOW_ARTIFACT_LOCATION"))
    raise AirflowException(
        f"No MLflow registry configured: create Airflow connection {conn_id!r} with "
        f"extra {{\"tracking_uri\": \"...\"}} or set MLFLOW_TRACKING_URI"
    )
