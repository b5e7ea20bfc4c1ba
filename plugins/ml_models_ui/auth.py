"""Plugin apps inherit no authentication in Airflow 3: every route here checks the Airflow user.

The user comes from the same JWT the UI holds (the ``_token`` cookie, or a Bearer header), via
Airflow's own ``get_user``; permissions from the configured auth manager. Reading the page
needs read access to both ML DAGs; a deploy, rollback or promotion on an endpoint needs permission to
create runs of the DAG that deploys there (``<model>__deploy`` for a model spec's endpoint, else
``ml_deploy``); answering a promotion's approval needs Airflow's permission on that training DAG's
required actions (HITL details).
"""

from __future__ import annotations

from fastapi import Depends, HTTPException, Request, status

from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity, DagDetails
from airflow.api_fastapi.core_api.security import GetUserDep

READ_DAGS = ("ml_training_pipeline", "ml_deploy")
DEPLOY_DAG = "ml_deploy"


def _allowed(user, method: str, dag_id: str, entity: str = "RUN") -> bool:
    """Airflow's own answer: may ``user`` do ``method`` on ``dag_id``'s runs (or, with entity
    ``HITL_DETAIL``, answer its required actions)."""
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.configuration import conf

    team = None
    if conf.getboolean("core", "multi_team", fallback=False):  # as Airflow's own routes: the DAG's team decides
        from airflow.models.dag import DagModel

        team = DagModel.get_team_name(dag_id)
    return get_auth_manager().is_authorized_dag(method=method, access_entity=DagAccessEntity[entity],
                                                details=DagDetails(id=dag_id, team_name=team), user=user)


def reader(user: GetUserDep):
    """Signed in, and may read the runs of both ML DAGs."""
    denied = [d for d in READ_DAGS if not _allowed(user, "GET", d)]
    if denied:
        raise HTTPException(status.HTTP_403_FORBIDDEN, f"user {user.get_name()!r} may not read DAG(s) {denied}")
    return user


def deployer(request: Request, user=Depends(reader)):
    """The form comes from this site (the cookie alone is not consent); the DAG's permission is
    checked by ``may_deploy`` once the endpoint's DAG is known."""
    origin = request.headers.get("origin")
    if origin and origin.rstrip("/") != f"{request.url.scheme}://{request.url.netloc}":
        raise HTTPException(status.HTTP_403_FORBIDDEN, f"cross-site request from {origin} refused")
    return user


def may_deploy(user, dag_id: str, what: str) -> None:
    if not _allowed(user, "POST", dag_id):
        raise HTTPException(status.HTTP_403_FORBIDDEN, f"user {user.get_name()!r} may not trigger {dag_id}, "
                                                       f"so may not {what}")


def user_token(request: Request) -> str:
    """The caller's own token, to call the REST API as them."""
    from airflow.api_fastapi.auth.managers.base_auth_manager import COOKIE_NAME_JWT_TOKEN

    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:]
    return request.cookies.get(COOKIE_NAME_JWT_TOKEN, "")
