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
COMPUTES = ("local", "kubernetes", "sagemaker", "vertex")
BAD_INPUT_MARK = "ml.train: exit code 2"  # what the trainer leaves in a cloud job's failure reason


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

    trainer_fields: tuple[str, ...] = ("data_uri", "output_uri", "output_root", "training_config")

    def _set_training(self, data_uri: str, config: dict[str, Any] | str, output_uri: str | None,
                      output_root: str | None) -> None:
        if (output_uri is None) == (output_root is None):
            raise ValueError("give exactly one of output_uri (the model URI) or output_root (a folder of models)")
        self.data_uri, self.training_config, self.output_uri, self.output_root = data_uri, config, output_uri, output_root

    def model_uri(self) -> str:
        """Where the model goes: ``output_uri``, or ``output_root`` + the snapshot's partition."""
        if self.output_uri:
            return self.output_uri
        return f"{self.output_root.rstrip('/')}/{self.data_uri.rstrip('/').rsplit('/', 1)[-1]}"

    def command(self, context: Context, result_file: str) -> list[str]:
        from operators.registry.lineage import run_lineage

        config = json.loads(self.training_config) if isinstance(self.training_config, str) else dict(self.training_config)
        return trainer_command(self.data_uri, self.model_uri(), config,
                               run_lineage(context, self.task_id), result_file)  # type: ignore[attr-defined]


def trained_result(model_uri: str, context: Context) -> dict[str, Any]:
    """``{"model_uri", "digest", "metrics"}`` of the model a cloud job trained, read from its
    manifest (a cloud job has no result file the worker can read). The manifest must record this
    run: an older model at the same URI is never taken for this run's."""
    from airflow.sdk.exceptions import AirflowException

    from ml import artifacts

    try:
        manifest = artifacts.read_manifest(model_uri, kind="model")
    except artifacts.ArtifactError as exc:
        raise AirflowException(f"the training job ended but left no model: {exc}") from None
    if manifest.lineage.get("run_id") != context["run_id"]:
        raise AirflowException(f"the model at {model_uri} was trained by run {manifest.lineage.get('run_id')!r}, "
                               f"not {context['run_id']!r}: this run's job wrote no model")
    return {"model_uri": model_uri, "digest": manifest.digest, "metrics": manifest.extra.get("metrics", {})}
