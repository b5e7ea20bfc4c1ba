"""Is a Deployment rollout complete, still progressing, or failed? Pure logic on the objects the
API server returns (Deployment, its ReplicaSets, their Pods, as JSON dicts), so it is tested on
objects shaped exactly like the API's.

Complete means what ``kubectl rollout status`` means: the controller observed the latest
generation, and updated = ready = available = desired replicas with none unavailable and no
old replica left. Failed means it will not complete by itself: the Progressing condition says
ProgressDeadlineExceeded, or a pod of the new ReplicaSet cannot pull its image, crash-loops,
or runs without becoming ready for longer than the readiness timeout.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from operators.deploy.targets.base import DeployStatus

REVISION = "deployment.kubernetes.io/revision"
IMAGE_PULL_FAILURES = {"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull",
                       "RegistryUnavailable", "SignatureValidationFailed"}
START_FAILURES = {"CreateContainerConfigError", "CreateContainerError", "RunContainerError"}


def _time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None


def new_replica_set(deployment: dict[str, Any], replica_sets: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The ReplicaSet of the Deployment's current revision (what the controller is rolling out)."""
    revision = deployment["metadata"].get("annotations", {}).get(REVISION)
    uid = deployment["metadata"].get("uid")
    owned = [rs for rs in replica_sets
             if not uid or any(o.get("uid") == uid for o in rs["metadata"].get("ownerReferences", []))]
    return next((rs for rs in owned if rs["metadata"].get("annotations", {}).get(REVISION) == revision), None)


def pods_of(replica_set: dict[str, Any] | None, pods: list[dict[str, Any]]) -> list[dict[str, Any]]:
    if replica_set is None:
        return []
    name = replica_set["metadata"]["name"]
    return [p for p in pods if any(o.get("kind") == "ReplicaSet" and o.get("name") == name
                                   for o in p["metadata"].get("ownerReferences", []))]


def pod_failure(pod: dict[str, Any], readiness_timeout: float, now: datetime) -> str | None:
    """Why ``pod`` will not become ready by itself, or None."""
    name = pod["metadata"]["name"]
    status = pod.get("status", {})
    for cs in [*status.get("initContainerStatuses", []), *status.get("containerStatuses", [])]:
        waiting = cs.get("state", {}).get("waiting") or {}
        reason = waiting.get("reason")
        detail = f": {waiting['message']}" if waiting.get("message") else ""
        if reason in IMAGE_PULL_FAILURES:
            return f"image pull error in pod {name}, container {cs['name']} ({reason}){detail}"
        if reason in START_FAILURES:
            return f"container {cs['name']} of pod {name} cannot start ({reason}){detail}"
        if reason == "CrashLoopBackOff":
            last = (cs.get("lastState") or {}).get("terminated") or {}
            return (f"crash loop in pod {name}, container {cs['name']}: restarted {cs.get('restartCount', 0)} times"
                    f", last exit code {last.get('exitCode')} ({last.get('reason')})")
        running = cs.get("state", {}).get("running")
        started = _time(running.get("startedAt")) if running else None
        if started and not cs.get("ready") and (now - started).total_seconds() > readiness_timeout:
            return (f"readiness timeout: pod {name}, container {cs['name']} has run "
                    f"{(now - started).total_seconds():.0f}s without passing its readiness probe (/ping)")
    return None


def rollout_status(deployment: dict[str, Any], replica_sets: list[dict[str, Any]], pods: list[dict[str, Any]],
                   *, readiness_timeout: float = 180, now: datetime | None = None) -> DeployStatus:
    now = now or datetime.now(timezone.utc)
    meta, spec, status = deployment["metadata"], deployment.get("spec", {}), deployment.get("status", {})
    name = meta["name"]
    conditions = {c["type"]: c for c in status.get("conditions", [])}
    progressing = conditions.get("Progressing", {})
    if progressing.get("status") == "False" and progressing.get("reason") == "ProgressDeadlineExceeded":
        return DeployStatus("failed", f"ProgressDeadlineExceeded: {progressing.get('message', '')} "
                                      f"(after spec.progressDeadlineSeconds={spec.get('progressDeadlineSeconds')})")
    if meta.get("generation", 0) > status.get("observedGeneration", 0):
        return DeployStatus("progressing", f"waiting for the controller to observe generation {meta.get('generation')}")
    desired = spec.get("replicas", 1)
    updated, ready = status.get("updatedReplicas", 0), status.get("readyReplicas", 0)
    available, total = status.get("availableReplicas", 0), status.get("replicas", 0)
    unavailable = status.get("unavailableReplicas", 0)
    if updated == ready == available == desired and total == updated and not unavailable:
        return DeployStatus("serving", f"deployment {name} successfully rolled out ({available}/{desired} available)")
    for pod in pods_of(new_replica_set(deployment, replica_sets), pods):
        failure = pod_failure(pod, readiness_timeout, now)
        if failure:
            return DeployStatus("failed", failure)
    if updated < desired:
        waiting = f"{updated} out of {desired} new replicas have been updated"
    elif total > updated:
        waiting = f"{total - updated} old replicas are pending termination"
    else:
        waiting = f"{available} of {updated} updated replicas are available"
    failure = conditions.get("ReplicaFailure", {})
    if failure.get("status") == "True":  # e.g. quota: may clear by itself until the progress deadline
        waiting += f" ({failure.get('reason')}: {failure.get('message')})"
    return DeployStatus("progressing", f"waiting for deployment {name} rollout to finish: {waiting}")
