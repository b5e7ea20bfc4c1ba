"""RedshiftToParquetOperator: ``UNLOAD ... FORMAT PARQUET`` into a snapshot, through the Redshift
Data API (the amazon provider's ``RedshiftDataHook``), so no row passes through a worker."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk.exceptions import AirflowFailException

from operators.extract.warehouse_export import WarehouseExportOperator

if TYPE_CHECKING:
    from airflow.sdk import Context


def unload_statement(query: str, staging_uri: str, iam_role: str) -> str:
    """The UNLOAD of ``query`` into Parquet files named ``part-...`` under ``staging_uri``."""
    quoted = query.strip().rstrip(";").replace("\\", "\\\\").replace("'", "\\'")
    return (f"UNLOAD ('{quoted}') TO '{staging_uri.rstrip('/')}/part-' IAM_ROLE '{iam_role}' "
            f"FORMAT AS PARQUET")


class RedshiftToParquetOperator(WarehouseExportOperator):
    """Extract ``sql`` from Redshift into a snapshot (see ``WarehouseExportOperator``).

    :param iam_role: the role Redshift assumes to write to the snapshot's S3 prefix.
    :param database, cluster_identifier / workgroup_name, db_user / secret_arn: where the
        statement runs and as whom (the Redshift Data API's parameters; no password here).
    :param aws_conn_id, region_name: the AWS connection the hook uses.
    """

    template_fields: Sequence[str] = (*WarehouseExportOperator.template_fields, "iam_role", "database")

    def __init__(self, *, iam_role: str, database: str, cluster_identifier: str | None = None,
                 workgroup_name: str | None = None, db_user: str | None = None, secret_arn: str | None = None,
                 aws_conn_id: str | None = "aws_default", region_name: str | None = None, poll_interval: int = 10,
                 **kwargs) -> None:
        if (cluster_identifier is None) == (workgroup_name is None):
            raise ValueError("give exactly one of cluster_identifier (provisioned) or workgroup_name (serverless)")
        super().__init__(**kwargs)
        self.iam_role, self.database = iam_role, database
        self.cluster_identifier, self.workgroup_name = cluster_identifier, workgroup_name
        self.db_user, self.secret_arn = db_user, secret_arn
        self.aws_conn_id, self.region_name, self.poll_interval = aws_conn_id, region_name, poll_interval

    def export(self, staging_uri: str, context: Context) -> dict[str, Any]:
        from airflow.providers.amazon.aws.hooks.redshift_data import RedshiftDataHook

        if not staging_uri.startswith("s3://"):
            raise AirflowFailException(f"Redshift UNLOADs to S3 only; snapshot_root is {self.snapshot_root}")
        statement = unload_statement(self.sql, staging_uri, self.iam_role)
        hook = RedshiftDataHook(aws_conn_id=self.aws_conn_id, region_name=self.region_name)
        self.log.info("UNLOAD into %s on %s", staging_uri, self.cluster_identifier or self.workgroup_name)
        done = hook.execute_query(sql=statement, database=self.database, cluster_identifier=self.cluster_identifier,
                                  workgroup_name=self.workgroup_name, db_user=self.db_user, secret_arn=self.secret_arn,
                                  statement_name=f"{self.task_id}-{context['run_id']}"[:500],
                                  wait_for_completion=True, poll_interval=self.poll_interval)
        return {"source": "redshift", "source_statement_id": done.statement_id,
                "source_cluster": self.cluster_identifier or self.workgroup_name, "source_database": self.database}
