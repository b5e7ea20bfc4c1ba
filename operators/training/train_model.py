"""TrainModelOperator: the trainer as a subprocess beside the worker (``compute="local"``, the
embedded default). ``compute="kubernetes"`` is ``KubernetesTrainOperator`` (operators/training/train_pod.py),
a real KubernetesPodOperator; ``training_operator`` picks one. Both run the command
``operators.training.trainer_command`` builds.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowException, AirflowFailException

from operators.training.trainer_command import COMPUTES, EXIT_BAD_INPUT, TrainerCommand

if TYPE_CHECKING:
    from airflow.sdk import Context


def training_operator(compute: str, *, kubernetes: dict[str, Any] | None = None,
                      sagemaker: dict[str, Any] | None = None, vertex: dict[str, Any] | None = None,
                      **kwargs) -> BaseOperator:
    """The train task for ``compute``: ``local`` (TrainModelOperator), ``kubernetes``
    (KubernetesTrainOperator), ``sagemaker`` (SageMakerTrainOperator) or ``vertex``
    (VertexTrainOperator), each given its own settings dict."""
    if compute == "local":
        return TrainModelOperator(**kwargs)
    if compute == "kubernetes":
        from operators.training.train_pod import KubernetesTrainOperator

        return KubernetesTrainOperator(**kwargs, **(kubernetes or {}))
    if compute == "sagemaker":
        from operators.training.train_sagemaker import SageMakerTrainOperator

        return SageMakerTrainOperator(**kwargs, **(sagemaker or {}))
    if compute == "vertex":
        from operators.training.train_vertex import VertexTrainOperator

        return VertexTrainOperator(**kwargs, **(vertex or {}))
    raise ValueError(f"compute must be one of {COMPUTES}, got {compute!r} (set ML_TRAIN_COMPUTE)")


def _die_with_parent() -> None:
    """In the trainer child: get SIGKILL when the task process dies (killed, timed out, OOM), so
    no orphaned trainer keeps writing beside the retry. Linux only; elsewhere a no-op."""
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class TrainModelOperator(TrainerCommand, BaseOperator):
    """Train a model from a snapshot into a model artifact, in a subprocess of the worker.

    See ``TrainerCommand`` for ``data_uri``, ``output_uri``/``output_root`` and ``config``.
    The trainer's output streams into the task log; exit code 2 (bad config or data) fails
    the task without retries.

    :returns: ``{"model_uri", "digest", "metrics"}``, one XCom per key.
    """

    template_fields: Sequence[str] = TrainerCommand.trainer_fields
    ui_color = "#fde9c8"

    def __init__(self, *, data_uri: str, config: dict[str, Any] | str, output_uri: str | None = None,
                 output_root: str | None = None, **kwargs) -> None:
        kwargs.setdefault("multiple_outputs", True)  # each result key is an XCom: `task.output["model_uri"]`
        super().__init__(**kwargs)
        self._set_training(data_uri, config, output_uri, output_root)

    def execute(self, context: Context) -> dict[str, Any]:
        with tempfile.TemporaryDirectory(prefix="ml-train-") as tmp:
            result_file = os.path.join(tmp, "return.json")
            cmd = self.command(context, result_file)
            self.log.info("Training locally: %s", " ".join(cmd[:7]) + " ...")
            self._run(cmd)
            with open(result_file) as f:
                return json.load(f)

    def _run(self, cmd: list[str]) -> None:
        """Run the trainer with this interpreter, streaming its output into the task log."""
        from operators.child_env import child_environment

        env = child_environment()  # no Airflow connections, no registry credentials
        tail: deque[str] = deque(maxlen=20)
        with subprocess.Popen(
            [sys.executable, *cmd[1:]], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
            preexec_fn=_die_with_parent,
        ) as proc:
            for line in proc.stdout:
                line = line.rstrip("\n")
                tail.append(line)
                self.log.info("[trainer] %s", line)
            code = proc.wait()
        if code != 0:
            reason = next((l for l in reversed(tail) if l.startswith("ml.train: error:")), tail[-1] if tail else "")
            exc_type = AirflowFailException if code == EXIT_BAD_INPUT else AirflowException
            raise exc_type(f"trainer exited with code {code}: {reason}")
