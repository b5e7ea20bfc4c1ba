"""The trainer command line, built once for every place it runs.

``TrainModelOperator`` (a subprocess beside the worker) and ``KubernetesTrainOperator`` (a real
KubernetesPodOperator) share only this: the same ``python -m ml.train`` arguments, the same
model location, the same lineage, and one way results come back (the trainer writes them to
``--result-file``). So a model trained on a laptop and one trained in the cluster ran the same
code with the same arguments.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow.sdk import Context

EXIT_BAD_INPUT = 2  # ml.train's code for bad config or data: retrying cannot help
COMPUTES = ("local", "kubernetes")


def trainer_command(data_uri: str, output_uri: str, config: dict[str, Any], lineage: dict[str, Any],
                    result_file: str) -> list[str]:
    """The trainer invocation, identical for every place it runs."""
    return [
        "python", "-m", "ml.train",
        "--data", data_uri,
        "--output", output_uri,
        "--config", json.dumps(config, sort_keys=True),
        "--lineage", json.dumps(lineage, sort_keys=True, default=str),
        "--result-file", result_file,
    ]


class TrainerCommand:
    """Mixin for the training operators: the snapshot, where the model goes, the config.

    :param data_uri: snapshot artifact URI.
    :param output_uri: model artifact URI to write; or give ``output_root`` instead, and the
        model goes to ``{output_root}/{the snapshot's partition}``, so models and snapshots
        share partition names (one per data interval or run).
    :param config: training config (see ``ml.training_config``), dict or JSON string.
    """

    trainer_fields: tuple[str, ...] = ("data_uri", "output_uri", "output_root", "config")

    def _set_training(self, data_uri: str, config: dict[str, Any] | str, output_uri: str | None,
                      output_root: str | None) -> None:
        if (output_uri is None) == (output_root is None):
            raise ValueError("give exactly one of output_uri (the model URI) or output_root (a folder of models)")
        self.data_uri, self.config, self.output_uri, self.output_root = data_uri, config, output_uri, output_root

    def model_uri(self) -> str:
        """Where the model goes: ``output_uri``, or ``output_root`` + the snapshot's partition."""
        if self.output_uri:
            return self.output_uri
        return f"{self.output_root.rstrip('/')}/{self.data_uri.rstrip('/').rsplit('/', 1)[-1]}"

    def command(self, context: Context, result_file: str) -> list[str]:
        from operators.lineage import run_lineage

        config = json.loads(self.config) if isinstance(self.config, str) else dict(self.config)
        return trainer_command(self.data_uri, self.model_uri(), config,
                               run_lineage(context, self.task_id), result_file)  # type: ignore[attr-defined]
