"""Where work runs under the CeleryExecutor: the queue of each kind of work, and a worker's name.

Training, batch scoring and deploys each go to their own Celery queue, everything else
(extracts, sensors, registry steps) to Airflow's default queue (``[operators] default_queue``).
Workers subscribe to queues (``airflow celery worker -q ...``): a training worker takes only
``training``, so a long training cannot hold the slots deploys and sensors need. The
LocalExecutor and the KubernetesExecutor ignore queues; the DAGs are the same under each.
"""

from __future__ import annotations

import os
import socket

KINDS = ("training", "scoring", "deploy")


def queue(kind: str) -> str:
    """The queue of ``kind`` (``training``, ``scoring``, ``deploy``); ``ML_QUEUE_<KIND>`` renames it."""
    if kind not in KINDS:
        raise ValueError(f"unknown kind of work {kind!r}: one of {KINDS}")
    return os.environ.get(f"ML_QUEUE_{kind.upper()}", kind)


def worker_hostname() -> str:
    """``[core] hostname_callable`` for workers that share a machine: ``ML_WORKER_HOSTNAME`` names
    each (task instances, logs and manifests say which ran a task), else the machine's FQDN."""
    return os.environ.get("ML_WORKER_HOSTNAME") or socket.getfqdn()
