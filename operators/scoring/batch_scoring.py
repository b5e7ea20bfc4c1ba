"""Batch scoring operators: plan shards -> score each shard (dynamic task mapping) -> commit.

The partition of a run (``{predictions_root}/{interval partition}``) is written by one
artifact write whose id is fixed by (dag, run): every shard task writes
``w-<write id>/shard-<map index>.parquet``, so a retry (any try number) replaces its own
shard, and a re-run of the interval under a new run replaces the whole partition at commit.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException

if TYPE_CHECKING:
    from airflow.sdk import Context


def run_write_id(dag_id: str, run_id: str) -> str:
    """The write id of a (dag, run): readable, safe in a path, and distinct per pair."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in f"{dag_id}.{run_id}")
    return f"{safe[:80]}-{hashlib.sha256(f'{dag_id}/{run_id}'.encode()).hexdigest()[:8]}"


def partition_uri(root: str, snapshot_uri: str) -> str:
    """The predictions partition of a scored snapshot: the same partition name under ``root``."""
    return f"{root.rstrip('/')}/{snapshot_uri.rstrip('/').rsplit('/', 1)[-1]}"


class PlanScoringOperator(BaseOperator):
    """Resolve the version behind ``alias``, verify its artifact, and cut the snapshot into shards.

    Returns the list of shards (what ``ScoreShardOperator.expand(shard=...)`` maps over) and
    pushes ``model`` (``{"version", "uri"}``) to XCom.
    """

    template_fields: Sequence[str] = ("model_name", "alias", "snapshot_uri", "rows_per_shard")

    def __init__(self, *, model_name: str, alias: str, snapshot_uri: str, rows_per_shard: int | str = 1_000_000,
                 mlflow_conn_id: str = "mlflow_default", **kwargs) -> None:
        super().__init__(**kwargs)
        self.model_name, self.alias, self.snapshot_uri = model_name, alias, snapshot_uri
        self.rows_per_shard, self.mlflow_conn_id = rows_per_shard, mlflow_conn_id

    def execute(self, context: Context) -> list[dict[str, Any]]:
        from mlflow.exceptions import MlflowException

        from ml import artifacts
        from ml.batch_scoring import plan_shards
        from operators.registry.mlflow_tracking import mlflow_target

        client = mlflow_target(self.mlflow_conn_id).client()
        try:
            version = client.get_model_version_by_alias(self.model_name, self.alias)
        except MlflowException as exc:
            raise AirflowFailException(f"no version of {self.model_name} has alias {self.alias!r} to score with "
                                       f"({exc.message}); train and promote one first") from None
        manifest = artifacts.open_verified(version.source, kind="model")
        shards = plan_shards(self.snapshot_uri, int(self.rows_per_shard))
        self.log.info("Scoring %d rows of %s with %s version %s (alias %s, model digest %s) in %d shard(s)",
                      sum(s["rows"] for s in shards), self.snapshot_uri, self.model_name, version.version,
                      self.alias, manifest.digest[:12], len(shards))
        context["ti"].xcom_push(key="model", value={"version": str(version.version), "uri": version.source})
        return shards


class ScoreShardOperator(BaseOperator):
    """Score one shard; mapped over the plan, its file keyed by (dag, run, map index)."""

    template_fields: Sequence[str] = ("model", "snapshot_uri", "predictions_root", "shard")

    def __init__(self, *, model: dict | Any, snapshot_uri: str, predictions_root: str, shard: dict | Any,
                 **kwargs) -> None:
        super().__init__(**kwargs)
        self.model, self.snapshot_uri, self.predictions_root, self.shard = model, snapshot_uri, predictions_root, shard

    def execute(self, context: Context) -> dict[str, Any]:
        from ml.batch_scoring import score_shard

        write_uri = (f"{partition_uri(self.predictions_root, self.snapshot_uri)}/"
                     f"w-{run_write_id(context['dag'].dag_id, context['run_id'])}")
        from operators.workers import worker_hostname

        shard = {**self.shard, "shard": context["ti"].map_index}
        worker = getattr(context["ti"], "hostname", None) or worker_hostname()
        self.log.info("Shard %d: %d rows from %d file(s) -> %s, on worker %s (try %d)", shard["shard"], shard["rows"],
                      len(shard["parts"]), write_uri, worker, context["ti"].try_number)
        # shards of this run share the worker's cores (at most max_active_tis_per_dagrun at once)
        scored = score_shard(self.model["uri"], self.model["version"], self.snapshot_uri, shard, write_uri,
                             concurrent_shards=self.max_active_tis_per_dagrun or 1)
        self.log.info("Shard %d done: %d rows in %.2f s on worker %s", shard["shard"], scored["rows"],
                      scored["seconds"], worker)
        return {**scored, "worker": worker, "try": context["ti"].try_number}


class CommitPredictionsOperator(BaseOperator):
    """List the scored shards in the partition's manifest (atomic switch) and emit the asset event."""

    template_fields: Sequence[str] = ("model_name", "model", "snapshot_uri", "predictions_root", "shards",
                                      "asset_name")

    def __init__(self, *, model_name: str, model: dict | Any, snapshot_uri: str, predictions_root: str,
                 shards: Any, asset_name: str | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.model_name, self.model, self.snapshot_uri = model_name, model, snapshot_uri
        self.predictions_root, self.shards, self.asset_name = predictions_root, shards, asset_name

    def execute(self, context: Context) -> dict[str, Any]:
        from ml import artifacts
        from ml.batch_scoring import commit_predictions
        from operators.asset_events import emit_asset_event
        from operators.registry.lineage import run_lineage

        shards = list(self.shards)
        uri = partition_uri(self.predictions_root, self.snapshot_uri)
        snapshot = artifacts.read_manifest(self.snapshot_uri, kind="snapshot")
        manifest = commit_predictions(
            uri, run_write_id(context["dag"].dag_id, context["run_id"]), shards,
            lineage={**run_lineage(context, self.task_id), "snapshot_uri": self.snapshot_uri,
                     "snapshot_digest": snapshot.digest, "model_uri": self.model["uri"]},
            extra={"model_name": self.model_name, "model_version": self.model["version"], "shards": len(shards),
                   # which worker scored each shard, its rows and seconds (the task logs say the same)
                   "shard_runs": [{k: s.get(k) for k in ("name", "rows", "seconds", "worker", "try")} for s in shards]})
        if manifest.row_count != snapshot.row_count:
            raise AirflowFailException(f"{uri}: {manifest.row_count} predictions for {snapshot.row_count} rows")
        self.log.info("Predictions %s: %d rows in %d shard(s) by version %s, digest %s", uri, manifest.row_count,
                      len(shards), self.model["version"], manifest.digest[:12])
        result = {"uri": uri, "digest": manifest.digest, "row_count": manifest.row_count,
                  "model_version": self.model["version"]}
        emit_asset_event(context, self.outlets, self.asset_name, self.predictions_root.rstrip("/"), result)
        return result
