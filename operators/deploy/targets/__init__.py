"""Where a model version is served. One interface (``base.DeployTarget``) per target, all
serving the same ml.serve contract; the registry below is the only list of them."""

from __future__ import annotations

import importlib
from typing import Any

from operators.deploy.targets.base import DeployRefusedError, DeployStatus, DeployTarget, Served

TARGETS = {
    "local": "operators.deploy.targets.local:LocalServerTarget",
    "kubernetes": "operators.deploy.targets.kubernetes:KubernetesTarget",
    "sagemaker": "operators.deploy.targets.sagemaker:SageMakerTarget",
    "vertex": "operators.deploy.targets.vertex:VertexTarget",
}


def target_class(kind: str) -> type[DeployTarget]:
    if kind not in TARGETS:
        raise ValueError(f"unknown deploy target {kind!r}; available: {sorted(TARGETS)} "
                         f"(set ML_DEPLOY_TARGET or the endpoint connection's extra 'target')")
    module, _, name = TARGETS[kind].partition(":")
    return getattr(importlib.import_module(module), name)


def get_target(kind: str | None, endpoint: str, conn_id: str | None = None,
               settings: dict[str, Any] | None = None) -> DeployTarget:
    """The target for ``endpoint``. ``kind`` None: the connection's extra ``target``, else local.
    A target reads its settings from the connection's extras, overridden by ``settings`` (only
    these travel in the handle: connections are read again wherever the handle is used)."""
    from operators.connections import optional_connection

    conn = optional_connection(conn_id)
    kind = kind or (conn.extra_dejson.get("target") if conn is not None else None) or "local"
    return target_class(kind).from_connection(endpoint, conn_id, conn, settings or {})


def target_from_handle(handle: dict[str, Any]) -> DeployTarget:
    """Rebuild the target a handle names (in the triggerer, or after a worker restart)."""
    from operators.connections import optional_connection

    conn_id = handle.get("conn_id")
    target = target_class(handle["kind"]).from_connection(handle["endpoint"], conn_id, optional_connection(conn_id),
                                                          handle.get("settings") or {})
    target.in_flight = handle
    return target


__all__ = ["DeployRefusedError", "DeployStatus", "DeployTarget", "Served", "get_target", "target_from_handle",
           "TARGETS"]
