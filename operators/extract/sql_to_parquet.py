"""SqlToParquetOperator: extract a templated SQL query into a versioned Parquet snapshot."""

from __future__ import annotations

import queue
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowException

if TYPE_CHECKING:
    from airflow.sdk import Context


class EmptyExtractError(AirflowException):
    """The query returned no rows; nothing is written and the previous snapshot stays."""


def empty_extract(message: str, skip: bool) -> AirflowException:
    """What an extract with no rows raises: EmptyExtractError (the task fails), or, for a DAG
    where an empty interval is normal (daily scoring), AirflowSkipException: the task and
    everything after it are skipped and the run succeeds with nothing to do."""
    from airflow.sdk.exceptions import AirflowSkipException

    return AirflowSkipException(message) if skip else EmptyExtractError(message)


class SchemaMismatchError(AirflowException):
    """The query's columns differ from ``expected_columns``."""


def extraction_window(context: Context) -> tuple[Any, Any]:
    """(start, end) of the rows a run extracts: its data interval, or, for a run without one
    (a REST trigger with ``logical_date: null``, an asset-triggered run), everything up to
    the run's ``run_after``, with no start."""
    start, end = context.get("data_interval_start"), context.get("data_interval_end")
    if start is not None and end is not None:
        return start, end
    dag_run = context.get("dag_run")
    run_after = getattr(dag_run, "run_after", None) if dag_run is not None else None
    if run_after is None:
        raise AirflowException("this run has neither a data interval nor a run_after time to extract up to")
    return None, run_after


def interval_partition(context: Context) -> str:
    """The partition folder name of a run: its data interval, or its run id when it has none."""
    start, end = context.get("data_interval_start"), context.get("data_interval_end")
    if start is not None and end is not None and start != end:
        return f"interval={start.strftime('%Y%m%dT%H%M%SZ')}--{end.strftime('%Y%m%dT%H%M%SZ')}"
    run_id = context["run_id"]
    return "run=" + "".join(c if c.isalnum() or c in "-_." else "_" for c in run_id)


def check_columns(schema, expected: Sequence[str] | dict[str, str] | None) -> None:
    """Raise SchemaMismatchError naming missing, unexpected and mistyped columns."""
    if expected is None:
        return
    actual = {f.name: str(f.type) for f in schema}
    wanted = dict(expected) if isinstance(expected, dict) else {name: None for name in expected}
    missing = [c for c in wanted if c not in actual]
    unexpected = [c for c in actual if c not in wanted]
    mistyped = [
        f"{c}: expected {t}, got {actual[c]}" for c, t in wanted.items() if t is not None and c in actual and actual[c] != t
    ]
    if missing or unexpected or mistyped:
        parts = []
        if missing:
            parts.append(f"missing columns {missing}")
        if unexpected:
            parts.append(f"unexpected columns {unexpected}")
        if mistyped:
            parts.append(f"wrong types [{'; '.join(mistyped)}]")
        raise SchemaMismatchError(
            "query result does not match expected_columns: " + ", ".join(parts)
            + ". Fix the SELECT list or update expected_columns"
        )


class SqlToParquetOperator(BaseOperator):
    """Run ``sql`` on any common-sql connection and write a snapshot artifact.

    The snapshot goes to ``{snapshot_root}/{partition}`` where the partition is derived from
    the data interval, so a backfill run extracts exactly its interval and re-running it
    replaces that snapshot atomically (the manifest swap is the switch). A run without a data
    interval extracts up to its ``run_after`` into ``run=<run id>``. Batches stream from the
    database into a Parquet writer running in a second thread, so memory stays flat.

    :param conn_id: an Airflow connection whose hook is a common-sql DbApiHook.
    :param sql: the query, or a path to a ``.sql`` file; Jinja-templated. Besides Airflow's
        context it sees ``window_start`` / ``window_end`` (see ``extraction_window``), which
        every run has, with or without a data interval.
    :param snapshot_root: URI under which interval partitions are written (fsspec URI).
    :param expected_columns: column names, or ``{name: arrow type string}``; a mismatch fails.
    :param asset_name: name of the asset (uri: ``snapshot_root``) an ``AssetAlias`` outlet
        records the event on; the event carries uri, digest and row count.
    :param published_asset: in a run triggered by events on this asset, take the newest
        published snapshot instead of querying (``operators.extract.published_snapshots``); skipped
        when ``model_name`` already has a version trained on it.
    :param skip_when_empty: no rows skip the task (and what follows) instead of failing it.
    :returns: ``{"uri", "partition", "digest", "row_count", "schema"}`` (pushed to XCom).
    """

    template_fields: Sequence[str] = ("sql", "snapshot_root", "conn_id", "asset_name", "published_asset", "model_name")
    template_ext: Sequence[str] = (".sql",)
    template_fields_renderers = {"sql": "sql"}
    ui_color = "#cfe8fc"

    def __init__(
        self,
        *,
        conn_id: str,
        sql: str,
        snapshot_root: str,
        expected_columns: Sequence[str] | dict[str, str] | None = None,
        batch_rows: int = 100_000,
        rows_per_file: int = 1_000_000,
        lineage: dict[str, Any] | None = None,
        asset_name: str | None = None,
        published_asset: str | None = None,
        model_name: str | None = None,
        skip_when_empty: bool = False,
        **kwargs,
    ) -> None:
        kwargs.setdefault("multiple_outputs", True)  # each result key is an XCom: `task.output["uri"]`
        super().__init__(**kwargs)
        self.asset_name = asset_name
        self.published_asset, self.model_name = published_asset, model_name
        self.conn_id = conn_id
        self.sql = sql
        self.snapshot_root = snapshot_root
        self.expected_columns = expected_columns
        self.batch_rows = batch_rows
        if rows_per_file < 1:
            raise ValueError(f"rows_per_file must be at least 1, got {rows_per_file}")
        self.rows_per_file = rows_per_file
        self.lineage = lineage or {}
        self.skip_when_empty = skip_when_empty

    def render_template_fields(self, context: Context, jinja_env=None) -> None:
        context["window_start"], context["window_end"] = extraction_window(context)
        super().render_template_fields(context, jinja_env)

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow.sdk import BaseHook

        from ml import artifacts
        from ml.snapshots import arrow_schema_fields
        from operators.extract.published_snapshots import take_published_snapshot
        from operators.extract.sql_record_batches import record_batches

        if (published := take_published_snapshot(context, self.published_asset, self.model_name, self.log)) is not None:
            return published
        partition = interval_partition(context)
        uri = f"{self.snapshot_root.rstrip('/')}/{partition}"
        hook = BaseHook.get_connection(self.conn_id).get_hook()
        self.log.info("Extracting into %s via %s (%s)", uri, self.conn_id, type(hook).__name__)
        writer = artifacts.ArtifactWriter(uri, "snapshot")
        try:
            with record_batches(hook, self.sql, self.batch_rows) as (schema, batches):
                check_columns(schema, self.expected_columns)
                rows = self._write_parquet(writer, schema, batches)
            if rows == 0:
                raise empty_extract(
                    f"query returned no rows for {interval_partition(context)}; nothing was written "
                    f"and any previous snapshot at {uri} is unchanged. Check the WHERE clause and the "
                    f"data interval, or that the source has data for it", self.skip_when_empty)
            manifest = writer.commit(
                schema=arrow_schema_fields(schema),
                row_count=rows,
                lineage=self._lineage(context),
            )
        except BaseException:
            writer.abort()
            raise
        self.log.info("Snapshot %s: %d rows, digest %s", uri, rows, manifest.digest)
        result = {"uri": uri, "partition": partition, "digest": manifest.digest, "row_count": rows,
                  "schema": list(manifest.schema)}
        from operators.asset_events import emit_asset_event

        emit_asset_event(context, self.outlets, self.asset_name, self.snapshot_root.rstrip("/"),
                         {"uri": uri, "digest": manifest.digest, "row_count": rows})
        return result

    def _write_parquet(self, writer, schema, batches) -> int:
        """Consume batches on this thread, write Parquet on another (pyarrow releases the GIL).

        Only string-like columns are dictionary-encoded: for numeric columns (ids, floats) the
        dictionary mostly overflows and falls back to plain encoding after buffering, which
        doubled the extraction's memory in benchmarks/extract.py.
        """
        import pyarrow as pa
        import pyarrow.parquet as pq

        dictionary = [f.name for f in schema if pa.types.is_string(f.type) or pa.types.is_large_string(f.type)
                      or pa.types.is_dictionary(f.type)]
        pending: queue.Queue = queue.Queue(maxsize=2)  # bounds memory to a few batches
        failure: list[BaseException] = []

        def write() -> None:
            """A new part file every ``rows_per_file`` rows, so a scoring shard verifies (hashes) only
            the parts it reads, never the whole snapshot."""
            try:
                part, in_part = 0, 0
                while (batch := pending.get()) is not None:
                    with writer.open(f"part-{part:05d}.parquet") as f, \
                            pq.ParquetWriter(f, schema, use_dictionary=dictionary) as pw:
                        while batch is not None:
                            pw.write_batch(batch)
                            in_part += batch.num_rows
                            if in_part >= self.rows_per_file:
                                break
                            batch = pending.get()
                    if batch is None:
                        break
                    part, in_part = part + 1, 0
            except BaseException as exc:  # surfaced on the reading thread
                failure.append(exc)
                while pending.get() is not None:  # drain so the reader never blocks
                    pass

        thread = threading.Thread(target=write, name="parquet-writer", daemon=True)
        thread.start()
        rows = 0
        try:
            for batch in batches:
                if failure:
                    break
                if batch.num_rows:
                    pending.put(batch)
                    rows += batch.num_rows
                    if rows // self.batch_rows != (rows - batch.num_rows) // self.batch_rows:
                        self.log.info("... %d rows", rows)
        finally:
            pending.put(None)
            thread.join()
        if failure:
            raise failure[0]
        return rows

    def _lineage(self, context: Context) -> dict[str, Any]:
        from operators.registry.lineage import run_lineage

        start, end = extraction_window(context)
        return {
            **run_lineage(context, self.task_id),
            "window_start": start.isoformat() if start is not None else None,
            "window_end": end.isoformat(),
            "source_conn_id": self.conn_id,
            "source_query": self.sql,
            **self.lineage,
        }


SOURCES = ("sql", "redshift", "bigquery")


def extract_operator(source: str, *, conn_id: str, redshift: dict[str, Any] | None = None,
                     bigquery: dict[str, Any] | None = None, **kwargs) -> BaseOperator:
    """The extract task for ``source``: ``sql`` (SqlToParquetOperator on connection ``conn_id``),
    ``redshift`` (UNLOAD, RedshiftToParquetOperator) or ``bigquery`` (export job,
    BigQueryToParquetOperator), each given its own settings dict. All three commit the same
    snapshot, so nothing downstream changes."""
    if source == "sql":
        return SqlToParquetOperator(conn_id=conn_id, **kwargs)
    if source == "redshift":
        from operators.extract.redshift_to_parquet import RedshiftToParquetOperator

        return RedshiftToParquetOperator(**kwargs, **(redshift or {}))
    if source == "bigquery":
        from operators.extract.bigquery_to_parquet import BigQueryToParquetOperator

        return BigQueryToParquetOperator(**kwargs, **(bigquery or {}))
    raise ValueError(f"source must be one of {SOURCES}, got {source!r} (set ML_EXTRACT_FROM)")
