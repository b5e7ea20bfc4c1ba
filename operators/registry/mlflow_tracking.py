"""Where the MLflow registry is: an Airflow connection first, the environment second.

Connection ``mlflow_default`` (any conn type): ``extra.tracking_uri`` (e.g.
``sqlite:////path/mlflow.db``, ``postgresql://...``) or host/port/schema for an HTTP
tracking server, with login/password as basic auth. Without the connection,
``MLFLOW_TRACKING_URI``. Credentials stay in the connection and in the clients built from it:
never logged, never written to ``os.environ`` (where every child process, and every later
client of a long-lived process such as the api-server, would inherit them).
"""

from __future__ import annotations

import copy
import os
import threading
from dataclasses import dataclass, field

from airflow.sdk.exceptions import AirflowException


@dataclass(frozen=True)
class MlflowTarget:
    tracking_uri: str
    registry_uri: str | None = None
    artifact_location: str | None = None  # for experiments this project creates
    username: str | None = field(default=None, repr=False)
    password: str | None = field(default=None, repr=False)

    def client(self):
        from mlflow.tracking import MlflowClient

        if self.username:
            for uri in {self.tracking_uri, self.registry_uri or self.tracking_uri}:
                _remember_credentials(uri, self.username, self.password or "")
        from operators.registry.mlflow_schema import client_with_schema

        return client_with_schema(lambda: MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.registry_uri),
                                  self.tracking_uri)


_CREDENTIALS: dict[str, tuple[str, str]] = {}  # tracking server URL -> basic auth, this process only
_INSTALL = threading.Lock()


def _remember_credentials(uri: str, username: str, password: str) -> None:
    """Basic auth for REST stores of ``uri``, handed to MLflow where it builds a store's host
    credentials, which it otherwise reads from ``MLFLOW_TRACKING_USERNAME``/``_PASSWORD``."""
    import mlflow.tracking._model_registry.utils as registry_stores
    import mlflow.tracking._tracking_service.utils as tracking_stores

    with _INSTALL:
        _CREDENTIALS[uri.rstrip("/")] = (username, password)
        for module in (tracking_stores, registry_stores):
            if not getattr(module.get_default_host_creds, "_ml_pipelines", False):
                module.get_default_host_creds = _with_credentials(module.get_default_host_creds)


def _with_credentials(default_host_creds):
    def host_creds(store_uri):
        creds = default_host_creds(store_uri)
        if known := _CREDENTIALS.get(str(store_uri).rstrip("/")):
            creds = copy.copy(creds)
            creds.username, creds.password = known
        return creds

    host_creds._ml_pipelines = True
    return host_creds


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
        # HTTP basic auth for a tracking server, held by this target's clients only
        return MlflowTarget(uri, extra.get("registry_uri"), extra.get("artifact_location"),
                            username=conn.login or None, password=conn.password if conn.login else None)
    if uri := os.environ.get("MLFLOW_TRACKING_URI"):
        return MlflowTarget(uri, os.environ.get("MLFLOW_REGISTRY_URI"), os.environ.get("ML_MLFLOW_ARTIFACT_LOCATION"))
    raise AirflowException(
        f"No MLflow registry configured: create Airflow connection {conn_id!r} with "
        f"extra {{\"tracking_uri\": \"...\"}} or set MLFLOW_TRACKING_URI"
    )
