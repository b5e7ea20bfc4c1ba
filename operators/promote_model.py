"""PromoteModelOperator: move MLflow aliases (one per service level) to a version. Never stages."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from airflow.sdk import BaseOperator

if TYPE_CHECKING:
    from airflow.sdk import Context


class PromoteModelOperator(BaseOperator):
    template_fields: Sequence[str] = ("model_name", "version", "aliases")

    def __init__(self, *, model_name: str, version: str, aliases: Sequence[str] = ("production",),
                 mlflow_conn_id: str = "mlflow_default", **kwargs) -> None:
        super().__init__(**kwargs)
        self.model_name, self.version, self.aliases, self.mlflow_conn_id = model_name, version, aliases, mlflow_conn_id

    def execute(self, context: Context) -> dict:
        from mlflow.exceptions import MlflowException

        from operators.mlflow_tracking import mlflow_target

        client = mlflow_target(self.mlflow_conn_id).client()
        moved = {}
        for alias in self.aliases:
            try:
                before = str(client.get_model_version_by_alias(self.model_name, alias).version)
            except MlflowException:
                before = None
            client.set_registered_model_alias(self.model_name, alias, str(self.version))
            moved[alias] = {"from": before, "to": str(self.version)}
            self.log.info("Alias %s@%s: %s -> %s", self.model_name, alias, before, self.version)
        return moved
