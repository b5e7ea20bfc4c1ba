"""RegisterModelOperator: one MLflow model version per model artifact, never two.

The version's source is the model artifact URI; its run carries params and held-out
metrics; its tags carry the lineage (dag_id, run_id, snapshot and model digests). The
model digest is a content digest (see ``ml.artifacts.content_digest``), so registering
the same model again (a retried task, a re-run interval) returns the existing version.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException

if TYPE_CHECKING:
    from airflow.sdk import Context

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,255}$")
DIGEST_TAG = "model_digest"


def find_version(client, name: str, digest: str):
    """The oldest version of ``name`` tagged with ``digest``, or None."""
    hits = client.search_model_versions(f"name = '{name}' and tags.{DIGEST_TAG} = '{digest}'")
    return min(hits, key=lambda v: int(v.version)) if hits else None


def register_model_version(client, name: str, manifest, experiment_name: str, artifact_location: str | None,
                           lineage: dict[str, Any], log) -> tuple[Any, bool]:
    """(model version, created?) for the verified model ``manifest``."""
    from mlflow.entities import Metric, Param, RunTag
    from mlflow.exceptions import MlflowException

    existing = find_version(client, name, manifest.digest)
    if existing is not None:
        log.info("Model digest %s is already registered as %s version %s; not registering it again",
                 manifest.digest[:12], name, existing.version)
        return existing, False
    try:
        client.create_registered_model(name, description="Registered by the ml_training_pipeline DAGs")
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    experiment = client.get_experiment_by_name(experiment_name)
    experiment_id = (
        experiment.experiment_id if experiment else client.create_experiment(experiment_name, artifact_location)
    )
    tags = {
        **{f"lineage.{k}": str(v) for k, v in lineage.items() if v is not None and k != "source_query"},
        "snapshot_digest": manifest.extra.get("snapshot_digest", ""),
        DIGEST_TAG: manifest.digest,
        "estimator": manifest.extra.get("estimator", ""),
        "task": manifest.extra.get("task", ""),
        # the code that runs it: the class, its package and version, the image that trained it
        **{key: str(manifest.extra[key]) for key in ("model", "model_class", "model_package",
                                                     "model_package_version", "trainer_image")
           if manifest.extra.get(key) is not None},
    }
    run = client.create_run(experiment_id, run_name=f"{lineage.get('dag_id')}/{lineage.get('run_id')}",
                            tags={"mlflow.source.name": "airflow", **tags})
    run_id = run.info.run_id
    metrics = manifest.extra.get("metrics", {})
    client.log_batch(
        run_id,
        metrics=[Metric(k, float(v), run.info.start_time, 0) for k, v in metrics.items()],
        params=[Param(k, str(v)[:6000]) for k, v in {
            "estimator": manifest.extra.get("estimator"), "model": manifest.extra.get("model", "sklearn"),
            **manifest.extra.get("params", {}),
            "target": manifest.extra.get("target"), "n_train": manifest.extra.get("n_train"),
        }.items()],
        tags=[RunTag("model_uri", manifest.uri)],
    )
    client.set_terminated(run_id)
    version = client.create_model_version(
        name, source=manifest.uri, run_id=run_id, tags={**tags, **{f"metric.{k}": str(v) for k, v in metrics.items()}},
        description=f"{manifest.extra.get('estimator')} trained by {lineage.get('dag_id')} run {lineage.get('run_id')}",
    )
    # Two registrations racing for one digest: the oldest version wins, the newer is removed.
    winner = find_version(client, name, manifest.digest)
    if winner is not None and winner.version != version.version:
        client.delete_model_version(name, version.version)
        log.info("A concurrent run registered digest %s first as version %s", manifest.digest[:12], winner.version)
        return winner, False
    return version, True


class RegisterModelOperator(BaseOperator):
    """Create (or find) the MLflow model version of a verified model artifact.

    :param model_uri: model artifact URI (its manifest is verified first).
    :param model_name: registered model name.
    :param mlflow_conn_id: Airflow connection of the registry (see ``operators.registry.mlflow_tracking``).
    :param experiment_name: experiment of the registration runs; defaults to the model name.
    :param asset_name: name of the asset (uri: the folder holding ``model_uri``) an
        ``AssetAlias`` outlet records the event on.
    :returns: ``{"name", "version", "digest", "metrics", "run_id", "source", "created"}``.
    """

    template_fields: Sequence[str] = ("model_uri", "model_name", "mlflow_conn_id", "asset_name")
    ui_color = "#e4dcf7"

    def __init__(self, *, model_uri: str, model_name: str, mlflow_conn_id: str = "mlflow_default",
                 experiment_name: str | None = None, asset_name: str | None = None, **kwargs) -> None:
        kwargs.setdefault("multiple_outputs", True)  # each result key is an XCom: `task.output["uri"]`
        super().__init__(**kwargs)
        self.asset_name = asset_name
        self.model_uri = model_uri
        self.model_name = model_name
        self.mlflow_conn_id = mlflow_conn_id
        self.experiment_name = experiment_name

    def execute(self, context: Context) -> dict[str, Any]:
        from ml import artifacts
        from operators.registry.lineage import run_lineage
        from operators.registry.mlflow_tracking import mlflow_target

        if not NAME_PATTERN.match(self.model_name):
            raise AirflowFailException(
                f"model name {self.model_name!r} is not valid: use letters, digits, '_', '.', '-' (max 256)"
            )
        manifest = artifacts.open_verified(self.model_uri, kind="model")
        target = mlflow_target(self.mlflow_conn_id)
        lineage = {**manifest.lineage, **{k: v for k, v in run_lineage(context, self.task_id).items()
                                          if k in ("dag_id", "run_id")}}
        version, created = register_model_version(
            target.client(), self.model_name, manifest, self.experiment_name or self.model_name,
            target.artifact_location, lineage, self.log,
        )
        metrics = manifest.extra.get("metrics", {})
        if created:
            self.log.info("Registered %s version %s from %s, metrics %s", self.model_name, version.version,
                          self.model_uri, metrics)
        result = {
            "name": self.model_name, "version": str(version.version), "digest": manifest.digest,
            "metrics": metrics, "run_id": version.run_id, "source": version.source, "created": created,
        }
        from operators.asset_events import emit_asset_event

        emit_asset_event(context, self.outlets, self.asset_name, self.model_uri.rstrip("/").rsplit("/", 1)[0],
                         {k: result[k] for k in ("name", "version", "digest", "created")})
        return result
