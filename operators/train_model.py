"""TrainModelOperator: one trainer command, run as a local subprocess or a Kubernetes pod.

The command line is built once (``trainer_command``); ``compute`` only chooses where it
runs, so a model trained on a laptop and one trained in the cluster ran the same code
with the same arguments.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowException, AirflowFailException

if TYPE_CHECKING:
    from airflow.sdk import Context

COMPUTES = ("local", "kubernetes")
KUBERNETES_KEYS = {
    "image", "namespace", "cpu", "memory", "gpu", "node_selector", "tolerations",
    "service_account_name", "env_from_secrets", "env", "labels", "kubernetes_conn_id",
    "startup_timeout_seconds", "image_pull_policy", "volumes", "volume_mounts",
}
EXIT_BAD_INPUT = 2  # ml.train's code for bad config or data: retrying cannot help


def trainer_command(data_uri: str, output_uri: str, config: dict[str, Any], lineage: dict[str, Any]) -> list[str]:
    """The trainer invocation, identical for every place it runs."""
    return [
        "python", "-m", "ml.train",
        "--data", data_uri,
        "--output", output_uri,
        "--config", json.dumps(config, sort_keys=True),
        "--lineage", json.dumps(lineage, sort_keys=True, default=str),
    ]


def _die_with_parent() -> None:
    """In the trainer child: get SIGKILL when the task process dies (killed, timed out, OOM), so
    no orphaned trainer keeps writing beside the retry. Linux only; elsewhere a no-op."""
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _k8s_object(obj, kind: str):
    """A Kubernetes-shaped dict (camelCase, as in YAML) as the client's model object ``kind``."""
    if not isinstance(obj, dict):
        return obj
    from kubernetes.client import ApiClient

    class _Response:
        data = json.dumps(obj)

    return ApiClient().deserialize(_Response(), kind)


class TrainModelOperator(BaseOperator):
    """Train a model from a snapshot into a model artifact.

    :param data_uri: snapshot artifact URI.
    :param output_uri: model artifact URI to write; or give ``output_root`` instead, and the
        model goes to ``{output_root}/{the snapshot's partition}``, so models and snapshots
        share partition names (one per data interval or run).
    :param config: training config (see ``ml.training_config``), dict or JSON string.
    :param compute: ``"local"`` (subprocess beside the worker, the embedded default) or
        ``"kubernetes"`` (a KubernetesPodOperator pod running the trainer image).
    :param kubernetes: pod settings for ``compute="kubernetes"``: image, namespace, cpu,
        memory, gpu (``nvidia.com/gpu`` count), node_selector, tolerations (V1Toleration
        fields), service_account_name, env_from_secrets (Secret names mounted as env), env,
        labels, kubernetes_conn_id, startup_timeout_seconds, image_pull_policy, volumes and
        volume_mounts (Kubernetes-shaped dicts, e.g. a PVC holding the artifact store).
    :returns: ``{"model_uri", "digest", "metrics"}``.
    """

    template_fields: Sequence[str] = ("data_uri", "output_uri", "output_root", "config", "compute", "kubernetes")
    ui_color = "#fde9c8"

    def __init__(
        self,
        *,
        data_uri: str,
        config: dict[str, Any] | str,
        output_uri: str | None = None,
        output_root: str | None = None,
        compute: str = "local",
        kubernetes: dict[str, Any] | None = None,
        **kwargs,
    ) -> None:
        kwargs.setdefault("multiple_outputs", True)  # each result key is an XCom: `task.output["uri"]`
        super().__init__(**kwargs)
        if (output_uri is None) == (output_root is None):
            raise ValueError("give exactly one of output_uri (the model URI) or output_root (a folder of models)")
        self.data_uri = data_uri
        self.output_uri = output_uri
        self.output_root = output_root
        self.config = config
        self.compute = compute
        self.kubernetes = kubernetes or {}
        unknown = set(self.kubernetes) - KUBERNETES_KEYS
        if unknown:
            raise ValueError(f"unknown kubernetes settings {sorted(unknown)}; allowed: {sorted(KUBERNETES_KEYS)}")

    def command(self, context: Context) -> list[str]:
        from operators.lineage import run_lineage

        config = json.loads(self.config) if isinstance(self.config, str) else dict(self.config)
        return trainer_command(self.data_uri, self.model_uri(), config, run_lineage(context, self.task_id))

    def model_uri(self) -> str:
        """Where the model goes: ``output_uri``, or ``output_root`` + the snapshot's partition."""
        if self.output_uri:
            return self.output_uri
        return f"{self.output_root.rstrip('/')}/{self.data_uri.rstrip('/').rsplit('/', 1)[-1]}"

    def execute(self, context: Context) -> dict[str, Any]:
        if self.compute not in COMPUTES:
            raise AirflowFailException(f"compute must be one of {COMPUTES}, got {self.compute!r}")
        cmd = self.command(context)
        self.log.info("Training with compute=%s: %s", self.compute, " ".join(cmd[:7]) + " ...")
        if self.compute == "local":
            return self.run_local(cmd)
        return self.pod_operator(cmd).execute(context)

    def run_local(self, cmd: list[str]) -> dict[str, Any]:
        """Run the trainer with this interpreter, streaming its output into the task log."""
        project_root = str(Path(__file__).resolve().parent.parent)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (project_root, env.get("PYTHONPATH")) if p)
        tail: deque[str] = deque(maxlen=20)
        with subprocess.Popen(
            [sys.executable, *cmd[1:]], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
            preexec_fn=_die_with_parent,
        ) as proc:
            assert proc.stdout is not None
            for line in proc.stdout:
                line = line.rstrip("\n")
                tail.append(line)
                self.log.info("[trainer] %s", line)
            code = proc.wait()
        if code != 0:
            reason = next((l for l in reversed(tail) if l.startswith("ml.train: error:")), tail[-1] if tail else "")
            exc_type = AirflowFailException if code == EXIT_BAD_INPUT else AirflowException
            raise exc_type(f"trainer exited with code {code}: {reason}")
        return json.loads(tail[-1])

    def pod_operator(self, cmd: list[str]):
        """The KubernetesPodOperator that runs ``cmd`` with this operator's pod settings."""
        from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
        from airflow.providers.cncf.kubernetes.secret import Secret
        from kubernetes.client import models as k8s

        k = self.kubernetes
        if not k.get("image"):
            raise AirflowFailException("compute='kubernetes' needs kubernetes={'image': ...}: the trainer image to run")
        for uri in (self.data_uri, self.model_uri()):
            if "://" not in uri or uri.startswith("file://"):
                self.log.warning("%s is a local path: a pod sees it only if the same volume is mounted", uri)
        requests = {r: str(k[r]) for r in ("cpu", "memory") if k.get(r)}
        limits = dict(requests)
        if k.get("gpu"):
            limits["nvidia.com/gpu"] = str(int(k["gpu"]))
        tolerations = [k8s.V1Toleration(**t) for t in k.get("tolerations", [])]
        volumes = [_k8s_object(v, "V1Volume") for v in k.get("volumes", [])]
        mounts = [_k8s_object(m, "V1VolumeMount") for m in k.get("volume_mounts", [])]
        return KubernetesPodOperator(
            task_id=self.task_id,
            name=f"train-{self.task_id}".replace("_", "-"),
            namespace=k.get("namespace", "default"),
            image=k["image"],
            image_pull_policy=k.get("image_pull_policy", "IfNotPresent"),
            cmds=cmd[:3],
            arguments=cmd[3:],
            container_resources=k8s.V1ResourceRequirements(requests=requests or None, limits=limits or None),
            node_selector=k.get("node_selector"),
            tolerations=tolerations or None,
            service_account_name=k.get("service_account_name"),
            secrets=[Secret("env", None, name) for name in k.get("env_from_secrets", [])],
            env_vars=k.get("env"),
            volumes=volumes or None,
            volume_mounts=mounts or None,
            labels={"app.kubernetes.io/component": "trainer", **k.get("labels", {})},
            kubernetes_conn_id=k.get("kubernetes_conn_id", "kubernetes_default"),
            startup_timeout_seconds=k.get("startup_timeout_seconds", 600),
            do_xcom_push=True,
            get_logs=True,
            log_events_on_failure=True,
            on_finish_action="delete_pod",
        )
