"""BigQueryToParquetOperator: a query job into a scratch table, then an export job writing Parquet
into the snapshot in GCS, through the google provider's ``BigQueryHook``: no row passes through
a worker."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk.exceptions import AirflowFailException

from operators.extract.warehouse_export import WarehouseExportOperator

if TYPE_CHECKING:
    from airflow.sdk import Context


class BigQueryToParquetOperator(WarehouseExportOperator):
    """Extract ``sql`` (GoogleSQL) from BigQuery into a snapshot (see ``WarehouseExportOperator``).

    :param project_id: the project the jobs run (and are billed) in.
    :param scratch_dataset: a dataset for the query's result table (``dataset`` or
        ``project.dataset``); the table is deleted after the export, and should the delete fail,
        a table expiration on the dataset cleans up.
    :param location: the jobs' location (the dataset's).
    :param gcp_conn_id: the connection the provider's hook uses.
    """

    template_fields: Sequence[str] = (*WarehouseExportOperator.template_fields, "project_id", "scratch_dataset")

    def __init__(self, *, project_id: str, scratch_dataset: str, location: str | None = None,
                 gcp_conn_id: str = "google_cloud_default", **kwargs) -> None:
        super().__init__(**kwargs)
        self.project_id, self.scratch_dataset, self.location = project_id, scratch_dataset, location
        self.gcp_conn_id = gcp_conn_id

    def jobs(self, staging_uri: str, context: Context) -> tuple[dict[str, Any], dict[str, Any], str]:
        """(query job configuration, export job configuration, scratch table id)."""
        project, _, dataset = self.scratch_dataset.rpartition(".")
        project = project or self.project_id
        run = hashlib.sha256(f"{context['dag'].dag_id}/{context['run_id']}".encode()).hexdigest()[:12]
        table = re.sub(r"[^A-Za-z0-9_]", "_", f"ml_extract_{context['dag'].dag_id}_{self.task_id}_{run}")[:1024]
        destination = {"projectId": project, "datasetId": dataset, "tableId": table}
        labels = {"ml-pipelines-task": re.sub(r"[^a-z0-9_-]", "-", self.task_id.lower())[:63]}
        query = {"query": {"query": self.sql, "useLegacySql": False, "destinationTable": destination,
                           "writeDisposition": "WRITE_TRUNCATE", "createDisposition": "CREATE_IF_NEEDED"},
                 "labels": labels}
        export = {"extract": {"sourceTable": destination, "destinationUris": [f"{staging_uri.rstrip('/')}/part-*.parquet"],
                              "destinationFormat": "PARQUET", "compression": "SNAPPY"},
                  "labels": labels}
        return query, export, f"{project}.{dataset}.{table}"

    def export(self, staging_uri: str, context: Context) -> dict[str, Any]:
        import uuid

        from airflow.providers.google.cloud.hooks.bigquery import BigQueryHook

        if not staging_uri.startswith("gs://"):
            raise AirflowFailException(f"BigQuery exports to GCS only; snapshot_root is {self.snapshot_root}")
        query, export, scratch = self.jobs(staging_uri, context)
        hook = BigQueryHook(gcp_conn_id=self.gcp_conn_id, location=self.location, use_legacy_sql=False)
        stamp = uuid.uuid4().hex[:12]
        try:
            self.log.info("Query job into %s", scratch)
            query_job = hook.insert_job(configuration=query, job_id=f"ml_extract_query_{stamp}",
                                        project_id=self.project_id, location=self.location)
            self.log.info("Export job of %s into %s", scratch, staging_uri)
            export_job = hook.insert_job(configuration=export, job_id=f"ml_extract_export_{stamp}",
                                         project_id=self.project_id, location=self.location)
        finally:
            hook.delete_table(table_id=scratch, not_found_ok=True, project_id=self.project_id)
        return {"source": "bigquery", "source_query_job": query_job.job_id, "source_export_job": export_job.job_id,
                "source_project": self.project_id}
