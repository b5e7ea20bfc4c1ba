"""Where a model version is served. One small interface (url, current, deploy, confirm) per
target; ``local`` now, Kubernetes/SageMaker/Vertex AI later, all serving the same ml.serve contract."""

from __future__ import annotations

from operators.deploy_targets.base import DeployRefusedError, DeployTarget, Served


def get_target(kind: str, endpoint: str, conn_id: str | None = None, **settings) -> DeployTarget:
    if kind == "local":
        from operators.deploy_targets.local import LocalServerTarget

        return LocalServerTarget.from_connection(endpoint, conn_id, **settings)
    raise ValueError(f"unknown deploy target {kind!r}; available: ['local']")


__all__ = ["DeployRefusedError", "DeployTarget", "Served", "get_target"]
