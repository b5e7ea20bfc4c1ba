"""The deploy steps both DAGs use: deploy (wait, smoke test, auto-rollback) -> ledger, + watcher."""

from __future__ import annotations

import os

from airflow.sdk import Asset

from operators.deploy.ledger import FailIfUpstreamFailedOperator, RecordLedgerOperator
from operators.deploy.deploy_model import DeployModelOperator
from operators.workers import queue

ENDPOINT = os.environ.get("ML_ENDPOINT", "local-default")
# The deploy target is one setting: ML_DEPLOY_TARGET (local, kubernetes, sagemaker, vertex), or else the endpoint
# connection's extra "target", or else local (see operators/deploy/targets/__init__.py).
DEPLOY_TARGET = os.environ.get("ML_DEPLOY_TARGET") or None
# The endpoint's connection: an ml.serve endpoint reached by URL (host, port, admin token as
# password), or a Kubernetes endpoint's settings as extras. Absent: the local target starts and
# manages a server on the worker's machine.
ENDPOINT_CONN_ID = os.environ.get("ML_ENDPOINT_CONN_ID", "ml_endpoint")


def seconds_from_environment(name: str) -> float | None:
    """``name``'s value as seconds, None when unset; a clear error (it surfaces as the DAG's
    import error in the UI) when it is not a number >= 0."""
    text = os.environ.get(name, "").strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not seconds >= 0:  # NaN too
        raise ValueError(f"{name}={text!r}: give a number of seconds >= 0 (e.g. 0 to defer at once, 30 "
                         f"to wait in the task first), or unset it for the target's own")
    return seconds


# Seconds the deploy waits in the task before deferring to the triggerer; unset: the target's own.
WAIT_IN_TASK = seconds_from_environment("ML_DEPLOY_WAIT_IN_TASK")


def endpoint_asset(endpoint: str = ENDPOINT) -> Asset:
    """The ledger of an endpoint: one asset event per deploy or rollback."""
    return Asset(name=f"endpoint.{endpoint}", uri=f"x-ml-endpoint://{endpoint}")


def deploy_steps(*, model_name, version, reason: str, alias=None, endpoint: str = ENDPOINT,
                 target: str | None = DEPLOY_TARGET, target_conn_id: str = ENDPOINT_CONN_ID, ledger_outlets=None,
                 min_smoke_accuracy: float | None = None, task_id: str = "deploy", canary_percent=None,
                 suffix: str = "", smoke_protocol: str | None = None):
    """(deploy, record_ledger, watcher); wire upstream -> deploy, and deploy -> the other two.

    ``model_name``, ``version``, ``alias``, ``endpoint``, ``target`` and ``target_conn_id`` may be
    templates or XComArgs (``task.output[...]``). The ledger's record goes on ``ledger_outlets``:
    by default the endpoint's asset (the deployment's endpoint when ``endpoint`` is a template); an
    ``AssetAlias`` there takes the record on the asset of the endpoint the deploy really used.
    ``suffix`` tells a second level's ledger and watcher tasks from the first's. ``smoke_protocol``
    (invocations, v2, grpc; may be a template) is how the smoke test calls the endpoint.
    """
    if ledger_outlets is None:
        ledger_outlets = [endpoint_asset(ENDPOINT if "{{" in str(endpoint) else endpoint)]
    deploy = DeployModelOperator(
        task_id=task_id, model_name=model_name, version=version, alias=alias, endpoint=endpoint,
        target=target, target_conn_id=target_conn_id, reason=reason, min_smoke_accuracy=min_smoke_accuracy,
        canary_percent=canary_percent, wait_in_task=WAIT_IN_TASK, retries=0, queue=queue("deploy"),
        smoke_protocol=smoke_protocol,
    )
    record = RecordLedgerOperator(task_id=f"record_ledger{suffix}", deploy_task_id=task_id, outlets=ledger_outlets)
    watcher = FailIfUpstreamFailedOperator(task_id=f"fail_if_deploy_failed{suffix}", watched_task_id=task_id)
    deploy >> [record, watcher]
    return deploy, record, watcher
