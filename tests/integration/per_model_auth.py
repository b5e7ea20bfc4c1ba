"""An auth manager with per-DAG permissions, for the tests: Airflow's SimpleAuthManager (roles
only) plus rules that keep a user off some DAGs, as FAB's or Keycloak's per-DAG permissions do.

Configured as ``AIRFLOW__CORE__AUTH_MANAGER`` in a real api-server, so the UI, the REST API and
the models page all ask it the same question through ``is_authorized_dag``. The rules come from
``ML_TEST_DAG_DENY``: ``user:dag_id_prefix`` pairs, comma-separated.
"""

from __future__ import annotations

import os

from airflow.api_fastapi.auth.managers.simple.simple_auth_manager import SimpleAuthManager


def denied(username: str, dag_id: str | None) -> bool:
    for rule in os.environ.get("ML_TEST_DAG_DENY", "").split(","):
        name, _, prefix = rule.partition(":")
        if name and prefix and username == name and dag_id and dag_id.startswith(prefix):
            return True
    return False


class PerModelAuthManager(SimpleAuthManager):
    def is_authorized_dag(self, *, method, user, access_entity=None, details=None) -> bool:
        if denied(user.username, details.id if details else None):
            return False
        return super().is_authorized_dag(method=method, user=user, access_entity=access_entity, details=details)
