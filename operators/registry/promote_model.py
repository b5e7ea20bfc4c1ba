"""Move MLflow aliases (one per service level) to a version, and back when its deploy failed.
Never stages."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from airflow.sdk import BaseOperator

if TYPE_CHECKING:
    from airflow.sdk import Context


def alias_holder(client, model_name: str, alias: str) -> str | None:
    """The version ``alias`` names, or None when it names none."""
    from mlflow.exceptions import MlflowException

    try:
        return str(client.get_model_version_by_alias(model_name, alias).version)
    except MlflowException:
        return None


class PromoteModelOperator(BaseOperator):
    template_fields: Sequence[str] = ("model_name", "version", "aliases")

    def __init__(self, *, model_name: str, version: str, aliases: Sequence[str] = ("production",),
                 mlflow_conn_id: str = "mlflow_default", **kwargs) -> None:
        super().__init__(**kwargs)
        self.model_name, self.version, self.aliases, self.mlflow_conn_id = model_name, version, aliases, mlflow_conn_id

    def execute(self, context: Context) -> dict:
        from operators.registry.mlflow_tracking import mlflow_target

        client = mlflow_target(self.mlflow_conn_id).client()
        moved = {}
        for alias in self.aliases:
            before = alias_holder(client, self.model_name, alias)
            client.set_registered_model_alias(self.model_name, alias, str(self.version))
            moved[alias] = {"from": before, "to": str(self.version)}
            self.log.info("Alias %s@%s: %s -> %s", self.model_name, alias, before, self.version)
        return moved


class RestoreAliasesOperator(BaseOperator):
    """After the deploy of a promoted version failed: each alias the promote moved goes back to
    the version it named before, so the registry does not call a version the endpoint refused
    "production" (batch scoring and alias-following servers read that alias). An alias moved
    again since the promote is left where it is. Runs only when its upstream (the deploy) failed.
    """

    template_fields: Sequence[str] = ("model_name",)

    def __init__(self, *, model_name: str, promote_task_id: str = "promote", mlflow_conn_id: str = "mlflow_default",
                 **kwargs) -> None:
        kwargs.setdefault("trigger_rule", "all_failed")
        super().__init__(**kwargs)
        self.model_name, self.promote_task_id, self.mlflow_conn_id = model_name, promote_task_id, mlflow_conn_id

    def execute(self, context: Context) -> dict:
        from operators.registry.mlflow_tracking import mlflow_target

        moved = context["ti"].xcom_pull(task_ids=self.promote_task_id) or {}
        if not moved:
            self.log.info("Task %r moved no alias in this run: nothing to restore", self.promote_task_id)
            return {}
        client = mlflow_target(self.mlflow_conn_id).client()
        restored = {}
        for alias, move in moved.items():
            now = alias_holder(client, self.model_name, alias)
            if now != move["to"]:
                self.log.warning("Alias %s@%s now names version %s, not %s as the promote left it: left alone",
                                 self.model_name, alias, now, move["to"])
                continue
            if move["from"] is None:
                client.delete_registered_model_alias(self.model_name, alias)
            else:
                client.set_registered_model_alias(self.model_name, alias, move["from"])
            restored[alias] = {"from": move["to"], "to": move["from"]}
            self.log.info("Alias %s@%s back to %s (version %s failed to deploy)", self.model_name, alias,
                          move["from"] if move["from"] is not None else "unset", move["to"])
        return restored
