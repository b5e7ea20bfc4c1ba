"""Snapshots a warehouse writes itself: the export lands in the object store, never in a worker.

A warehouse (Redshift's UNLOAD, BigQuery's export job) writes Parquet files straight into the
snapshot's staging folder (``ArtifactWriter.staging_uri``, a fresh ``w-<id>/`` prefix). The
worker then reads only the Parquet *footers* (schema, row counts), hashes the files once, and
commits the same manifest ``SqlToParquetOperator`` commits, so sensors and the trainer cannot
tell where the rows came from. Until the manifest is committed nothing is visible; a failed or
empty export leaves the previous snapshot in force.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from operators.extract.sql_to_parquet import check_columns, empty_extract, extraction_window, interval_partition

if TYPE_CHECKING:
    from airflow.sdk import Context


class WarehouseExportOperator(BaseOperator):
    """Base of the warehouse extractors: subclasses implement :meth:`export` (write Parquet under
    the staging URI they are given) and name their source in :meth:`source_lineage`.

    :param sql: the SELECT, Jinja-templated; ``window_start``/``window_end`` as in SqlToParquetOperator.
    :param snapshot_root: URI under which interval partitions are written.
    :param expected_columns: names, or ``{name: arrow type}``; a mismatch fails before anything is committed.
    :param asset_name: the asset the snapshot event is recorded on (see SqlToParquetOperator).
    :param published_asset, model_name, skip_when_empty: see SqlToParquetOperator.
    :returns: ``{"uri", "partition", "digest", "row_count", "schema"}``, as SqlToParquetOperator.
    """

    template_fields: Sequence[str] = ("sql", "snapshot_root", "asset_name", "published_asset", "model_name")
    template_ext: Sequence[str] = (".sql",)
    template_fields_renderers = {"sql": "sql"}
    ui_color = "#cfe8fc"

    def __init__(self, *, sql: str, snapshot_root: str, expected_columns: Sequence[str] | dict[str, str] | None = None,
                 asset_name: str | None = None, lineage: dict[str, Any] | None = None,
                 published_asset: str | None = None, model_name: str | None = None, skip_when_empty: bool = False,
                 **kwargs) -> None:
        kwargs.setdefault("multiple_outputs", True)
        super().__init__(**kwargs)
        self.sql, self.snapshot_root, self.expected_columns = sql, snapshot_root, expected_columns
        self.asset_name, self.lineage = asset_name, lineage or {}
        self.published_asset, self.model_name = published_asset, model_name
        self.skip_when_empty = skip_when_empty

    def render_template_fields(self, context: Context, jinja_env=None) -> None:
        context["window_start"], context["window_end"] = extraction_window(context)
        super().render_template_fields(context, jinja_env)

    def export(self, staging_uri: str, context: Context) -> dict[str, Any]:
        """Have the warehouse write Parquet files under ``staging_uri``; returns lineage facts."""
        raise NotImplementedError

    def execute(self, context: Context) -> dict[str, Any]:
        from ml import artifacts
        from operators.extract.published_snapshots import take_published_snapshot

        if (published := take_published_snapshot(context, self.published_asset, self.model_name, self.log)) is not None:
            return published

        partition = interval_partition(context)
        uri = f"{self.snapshot_root.rstrip('/')}/{partition}"
        writer = artifacts.ArtifactWriter(uri, "snapshot")
        try:
            facts = self.export(writer.staging_uri, context)
            files = writer.adopt()
            self.log.info("The export left %d files under %s", len(files), writer.staging_uri)
            schema, rows = self._footers(uri, files)
            if schema is not None:
                check_columns(schema, self.expected_columns)
            if rows == 0:
                raise empty_extract(f"the export of {partition} holds no rows; nothing was committed and any "
                                    f"previous snapshot at {uri} is unchanged. Check the query and the interval",
                                    self.skip_when_empty)
            from ml.snapshots import arrow_schema_fields
            from operators.registry.lineage import run_lineage

            start, end = extraction_window(context)
            manifest = writer.commit(schema=arrow_schema_fields(schema), row_count=rows, lineage={
                **run_lineage(context, self.task_id), "window_start": start.isoformat() if start else None,
                "window_end": end.isoformat(), "source_query": self.sql, **facts, **self.lineage})
        except BaseException:
            writer.abort()
            raise
        self.log.info("Snapshot %s: %d rows, digest %s", uri, rows, manifest.digest)
        from operators.asset_events import emit_asset_event

        emit_asset_event(context, self.outlets, self.asset_name, self.snapshot_root.rstrip("/"),
                         {"uri": uri, "digest": manifest.digest, "row_count": rows})
        return {"uri": uri, "partition": partition, "digest": manifest.digest, "row_count": rows,
                "schema": list(manifest.schema)}

    def _footers(self, uri: str, files) -> tuple[Any, int]:
        """(schema, rows) of the ``files`` adopted into the snapshot at ``uri``, from their Parquet
        footers only; every file must have the same schema. Files that are not Parquet (a
        warehouse's manifest or marker files) are refused."""
        import pyarrow.parquet as pq

        from ml import artifacts

        fs, root = artifacts.resolve(uri)
        schema, rows = None, 0
        for entry in files:
            with fs.open(f"{root}/{entry.path}", "rb") as f:
                try:
                    meta = pq.ParquetFile(f).metadata
                except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for "not Parquet"
                    raise artifacts.ArtifactCorruptError(f"{entry.path} from the export is not Parquet: {exc}") from None
                file_schema = meta.schema.to_arrow_schema()
            if schema is None:
                schema = file_schema
            elif not file_schema.equals(schema):
                raise artifacts.ArtifactCorruptError(f"{entry.path} has schema {file_schema}, the first file {schema}")
            rows += meta.num_rows
        return schema, rows
