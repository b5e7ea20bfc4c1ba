"""Slack alerts: a failed task, a successful deploy, an automatic rollback.

Sent through the slack provider's ``SlackWebhookNotifier`` on connection ``ML_SLACK_CONN_ID``
(default ``ml_slack``: conn type ``slackwebhook``, the webhook URL or token as password). No
connection, no alert: the task log says so once, and nothing fails.

``task_failure_alert()`` goes into every DAG's ``default_args`` as ``on_failure_callback``
(a DAG-level ``on_failure_callback`` does not fire reliably in Airflow 3.1-3.2,
apache/airflow#63374). The provider's module is imported only when an alert is sent: it
pulls in slack_sdk, which the DAG processor would otherwise import on every parse.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseNotifier

if TYPE_CHECKING:
    from airflow.sdk import Context

SLACK_CONN_ID = os.environ.get("ML_SLACK_CONN_ID", "ml_slack")

FAILURE_TEXT = (
    ":red_circle: *{{ dag.dag_id }}* task `{{ ti.task_id }}`{% if ti.map_index is not none and ti.map_index >= 0 %}"
    "[{{ ti.map_index }}]{% endif %} failed (try {{ ti.try_number }}) in run `{{ run_id }}`\n"
    "Error: {{ exception | string | truncate(600) }}\nLog: {{ ti.log_url }}"
)


class SlackAlert(BaseNotifier):
    """The provider's webhook notifier, built at send time; off without the connection."""

    template_fields = ("text",)

    def __init__(self, *, text: str, slack_conn_id: str | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.text = text
        self.slack_conn_id = slack_conn_id or SLACK_CONN_ID

    def notify(self, context: Context) -> None:
        from operators.connections import optional_connection

        if optional_connection(self.slack_conn_id) is None:
            self.log.info("No Slack connection %r; alert not sent: %s", self.slack_conn_id, self.text[:200])
            return
        from airflow.providers.slack.notifications.slack_webhook import SlackWebhookNotifier

        SlackWebhookNotifier(slack_webhook_conn_id=self.slack_conn_id, text=self.text, timeout=10).notify(context)
        self.log.info("Slack alert sent on %s", self.slack_conn_id)


def task_failure_alert(slack_conn_id: str | None = None) -> SlackAlert:
    """For ``default_args["on_failure_callback"]``: DAG, task, try, error and the log's URL, on
    ``slack_conn_id`` (a model spec's ``alerts.slack_conn_id``) or the deployment's."""
    return SlackAlert(text=FAILURE_TEXT, slack_conn_id=slack_conn_id)


def _metric_line(model: str, version: str | None, previous: str | None, mlflow_conn_id: str) -> str:
    """The held-out metrics of ``version`` with their change against ``previous``, from the registry."""
    from operators.registry.mlflow_tracking import mlflow_target

    client = mlflow_target(mlflow_conn_id).client()

    def metrics(v: str | None) -> dict[str, float]:
        if not v:
            return {}
        run_id = client.get_model_version(model, v).run_id
        found = client.get_run(run_id).data.metrics if run_id else {}
        return {k: v for k, v in found.items() if not k.startswith("eval_")}  # held-out, not the gate's

    now, before = metrics(version), metrics(previous)
    parts = []
    for name in sorted(now):
        change = f" ({now[name] - before[name]:+.4f} vs v{previous})" if name in before else ""
        parts.append(f"{name} {now[name]:.4f}{change}")
    return ", ".join(parts) or "no metrics recorded"


def ledger_text(record: dict[str, Any], mlflow_conn_id: str = "mlflow_default") -> str | None:
    """The alert for a ledger record: a deploy that serves, or an automatic rollback; else None."""
    outcome, model, endpoint = record.get("outcome"), record.get("model"), record.get("endpoint")
    if outcome == "serving":
        try:
            metrics = _metric_line(model, record.get("version"), record.get("previous_version"), mlflow_conn_id)
        except Exception as exc:  # noqa: BLE001 - the alert still goes out, without metrics
            metrics = f"metrics unavailable ({type(exc).__name__})"
        return (f":rocket: *{model}* version {record.get('version')} serves on endpoint `{endpoint}` "
                f"(before: {record.get('previous_version') or 'nothing'}; {record.get('seconds_to_serve')} s to serve)"
                f"\n{metrics}\nRun `{record.get('run_id')}`")
    if outcome in ("rolled_back", "rollback_failed", "failed_no_previous"):
        back = {"rolled_back": f"rolled back to version {record.get('version')}",
                "rollback_failed": "ROLLBACK FAILED", "failed_no_previous": "nothing to roll back to"}[outcome]
        return (f":rotating_light: *{model}* version {record.get('failed_version')} on endpoint `{endpoint}`: "
                f"{back}\nReason: {record.get('reason')}\nRun `{record.get('run_id')}`")
    return None
