"""KubernetesTrainOperator: training as a real KubernetesPodOperator (``compute="kubernetes"``).

The pod operator *is* the task, so everything the provider does for a pod holds: deferrable
waiting in the triggerer, logs streamed into the task log, ``on_kill`` deleting the pod when
the task is killed or times out, the XCom sidecar returning ``/airflow/xcom/return.json``.
What is added here: the trainer command (shared with ``compute="local"``), resources from
plain strings, and trainer exit code 2 (bad config or data) failing without retries.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
from airflow.sdk.exceptions import AirflowException, AirflowFailException

from operators.training.trainer_command import EXIT_BAD_INPUT, TrainerCommand

if TYPE_CHECKING:
    from airflow.sdk import Context
    from kubernetes.client import models as k8s

XCOM_RETURN = "/airflow/xcom/return.json"  # what the provider's XCom sidecar reads


def kubernetes_object(obj, kind: str):
    """A Kubernetes-shaped dict (camelCase, as in YAML) as the client's model object ``kind``."""
    if not isinstance(obj, dict):
        return obj
    from kubernetes.client import ApiClient

    class _Response:
        data = json.dumps(obj)

    return ApiClient().deserialize(_Response(), kind)


def resource_requirements(resources: dict[str, Any]) -> k8s.V1ResourceRequirements | None:
    """``{"cpu", "memory", "gpu"}`` (strings or numbers, as Params render) as requests = limits,
    with ``nvidia.com/gpu`` only when a GPU is asked for."""
    from kubernetes.client import models as k8s

    requests = {r: str(resources[r]) for r in ("cpu", "memory") if resources.get(r) not in (None, "")}
    limits = dict(requests)
    if int(resources.get("gpu") or 0):
        limits["nvidia.com/gpu"] = str(int(resources["gpu"]))
    return k8s.V1ResourceRequirements(requests=requests or None, limits=limits or None) if limits else None


def base_exit_code(pod: k8s.V1Pod | None, container: str) -> int | None:
    """The exit code of ``container`` in a pod read from the API, if it terminated."""
    statuses = (pod.status.container_statuses if pod is not None and pod.status else None) or []
    status = next((s for s in statuses if s.name == container), None)
    terminated = status.state.terminated if status is not None and status.state else None
    return terminated.exit_code if terminated is not None else None


class KubernetesTrainOperator(TrainerCommand, KubernetesPodOperator):
    """Train in a pod running the trainer image.

    See ``TrainerCommand`` for ``data_uri``, ``output_uri``/``output_root`` and ``config``.

    :param image: the trainer image (docker/trainer/Dockerfile).
    :param compute_resources: ``{"cpu", "memory", "gpu"}``; requests = limits; templated (Params).
    :param env_from_secrets: Kubernetes Secret names whose keys become environment variables
        (artifact store credentials, e.g. AWS_ACCESS_KEY_ID); never values in the DAG.
    :param volumes, volume_mounts: Kubernetes-shaped dicts or client objects, e.g. a PVC holding
        the artifact store when it is a path rather than s3:// or gs://.
    Every other KubernetesPodOperator argument is accepted (namespace, node_selector,
    tolerations, service_account_name, kubernetes_conn_id, ...). Deferrable by default.
    :returns: ``{"model_uri", "digest", "metrics"}``, one XCom per key, as the local operator.
    """

    template_fields: Sequence[str] = (*KubernetesPodOperator.template_fields, *TrainerCommand.trainer_fields,
                                      "compute_resources")
    ui_color = "#fde9c8"

    def __init__(self, *, data_uri: str, config: dict[str, Any] | str, image: str, output_uri: str | None = None,
                 output_root: str | None = None, compute_resources: dict[str, Any] | None = None,
                 env_from_secrets: Sequence[str] = (), volumes: Sequence | None = None,
                 volume_mounts: Sequence | None = None, labels: dict[str, str] | None = None,
                 **kwargs) -> None:
        from airflow.providers.cncf.kubernetes.secret import Secret

        if not image:
            raise ValueError("KubernetesTrainOperator needs image=: the trainer image to run (ML_TRAINER_IMAGE)")
        kwargs.setdefault("multiple_outputs", True)
        kwargs.setdefault("deferrable", True)
        kwargs.setdefault("name", f"train-{kwargs.get('task_id', 'model')}".replace("_", "-"))
        kwargs.setdefault("image_pull_policy", "IfNotPresent")
        kwargs.setdefault("startup_timeout_seconds", 600)
        super().__init__(
            image=image,
            cmds=["python", "-m", "ml.train"],
            arguments=[],  # built per run from the context: see build_pod_request_obj
            secrets=[Secret("env", None, name) for name in env_from_secrets],
            volumes=[kubernetes_object(v, "V1Volume") for v in volumes or []] or None,
            volume_mounts=[kubernetes_object(m, "V1VolumeMount") for m in volume_mounts or []] or None,
            labels={"app.kubernetes.io/component": "trainer", **(labels or {})},
            do_xcom_push=True,
            get_logs=True,
            log_events_on_failure=True,
            on_finish_action="delete_pod",
            **kwargs,
        )
        self._set_training(data_uri, config, output_uri, output_root)
        self.compute_resources = compute_resources or {}

    def build_pod_request_obj(self, context: Context | None = None, *, dry_run: bool = False) -> k8s.V1Pod:
        if context is not None:  # `airflow tasks render`/dry runs without a context keep the bare command
            command = self.command(context, XCOM_RETURN)
            self.cmds, self.arguments = command[:3], command[3:]
            for uri in (self.data_uri, self.model_uri()):
                if "://" not in uri or uri.startswith("file://"):
                    self.log.warning("%s is a local path: the pod sees it only if a volume mounts it there", uri)
        self.container_resources = resource_requirements(self.compute_resources)
        pod = super().build_pod_request_obj(context, dry_run=dry_run)
        for container in pod.spec.containers:
            if container.name == self.base_container_name:
                # the trainer's last lines ("ml.train: error: ...") become the termination message
                container.termination_message_policy = "FallbackToLogsOnError"
        return pod

    def cleanup(self, pod: k8s.V1Pod, remote_pod: k8s.V1Pod, xcom_result: dict | None = None,
                context: Context | None = None) -> None:
        """The provider's cleanup (delete the pod, report the failure), with exit code 2 as a
        failure retries cannot fix, on both the deferrable and the synchronous path."""
        try:
            super().cleanup(pod, remote_pod, xcom_result, context)
        except AirflowFailException:
            raise
        except AirflowException as exc:
            if base_exit_code(remote_pod, self.base_container_name) == EXIT_BAD_INPUT:
                raise AirflowFailException(f"trainer exited with code {EXIT_BAD_INPUT} (bad config or data; "
                                           f"not retried): {exc}") from exc
            raise
