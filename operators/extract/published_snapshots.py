"""Data-aware retraining: a run triggered by a published training snapshot trains on that snapshot.

Whoever produces training data (a data team's DAG with ``SqlToParquetOperator``, any system
through ``POST /api/v2/assets/events``) publishes an asset event on
``<model>.training_snapshots`` whose extra names the snapshot (``{"uri": ...}``). The
training pipeline is scheduled on cron *or* that asset. In an asset-triggered run the extract
task takes the newest published snapshot instead of querying the source: it verifies it and
returns what an extract returns, so the rest of the pipeline is unchanged.

No duplicate training for one snapshot: events that arrive before the run starts are consumed
by one run; a snapshot already trained (a registered version records its digest) is skipped,
with the version named in the log. The pipeline's own extract records its snapshots on
``<model>.snapshots``, an asset it is not scheduled on, so a cron run never triggers another.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow.sdk import Context


def training_snapshots_asset(model_name: str):
    from airflow.sdk import Asset

    return Asset(name=f"{model_name}.training_snapshots", uri=f"x-ml-training-snapshots://{model_name}")


def take_published_snapshot(context: Context, asset_name: str | None, model_name: str | None, log,
                            mlflow_conn_id: str = "mlflow_default") -> dict[str, Any] | None:
    """What the extract returns for the newest snapshot published on ``asset_name`` that
    triggered this run; None when the run was not triggered by one."""
    if not asset_name:
        return None
    events = [e for e in _triggering_events(context) if e.asset.name == asset_name]
    if not events:
        return None
    from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

    from ml import artifacts

    newest = max(events, key=lambda e: e.timestamp)
    uri = (newest.extra or {}).get("uri")
    if not uri:
        raise AirflowFailException(f"the event on {asset_name} that triggered this run has no extra 'uri' naming "
                                   f"the snapshot; publish events as {{\"uri\": \"<snapshot URI>\"}}")
    try:
        manifest = artifacts.open_verified(uri, kind="snapshot")
    except artifacts.ArtifactError as exc:
        raise AirflowFailException(f"published snapshot {uri} cannot be used: {exc}") from None
    if model_name and (version := _trained_version(model_name, manifest.digest, mlflow_conn_id)):
        message = (f"published snapshot {uri} (digest {manifest.digest[:12]}) was already trained: {model_name} "
                   f"version {version} records it; not training it twice")
        log.info("%s", message)  # the skip's reason is not in the task log otherwise
        raise AirflowSkipException(message)
    log.info("Run triggered by %d event(s) on %s; training on the newest published snapshot %s (%d rows, "
             "digest %s, published at %s by %s)", len(events), asset_name, uri, manifest.row_count or 0,
             manifest.digest[:12], newest.timestamp, newest.source_dag_id or "the REST API")
    return {"uri": uri, "partition": uri.rstrip("/").rsplit("/", 1)[-1], "digest": manifest.digest,
            "row_count": manifest.row_count, "schema": list(manifest.schema)}


def _triggering_events(context: Context) -> list:
    accessor = context.get("triggering_asset_events") or {}
    return [event for key in accessor for event in accessor[key]]


def _trained_version(model_name: str, digest: str, mlflow_conn_id: str) -> str | None:
    from mlflow.exceptions import MlflowException

    from operators.registry.mlflow_tracking import mlflow_target

    client = mlflow_target(mlflow_conn_id).client()
    try:
        hits = client.search_model_versions(f"name = '{model_name}' and tags.snapshot_digest = '{digest}'")
    except MlflowException:
        return None
    return str(min(int(v.version) for v in hits)) if hits else None
