"""The deployment ledger: asset events on the endpoint's asset, one per deploy or rollback.

The deploy task pushes its outcome to XCom (``ledger``) whether it succeeds or fails;
``RecordLedgerOperator`` runs after it whatever happened (trigger rule all_done) and emits
that record as the asset event, because Airflow emits outlet events only for successful
tasks, and sends the Slack alert of a deploy or an automatic rollback (``operators.alerts``).
``FailIfUpstreamFailedOperator`` then keeps the DAG run failed when the deploy failed.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

if TYPE_CHECKING:
    from airflow.sdk import Context


class RecordLedgerOperator(BaseOperator):
    def __init__(self, *, deploy_task_id: str, **kwargs) -> None:
        kwargs.setdefault("trigger_rule", "all_done")
        super().__init__(**kwargs)
        self.deploy_task_id = deploy_task_id

    def execute(self, context: Context) -> dict[str, Any]:
        record = context["ti"].xcom_pull(task_ids=self.deploy_task_id, key="ledger")
        if not record:
            raise AirflowSkipException(f"{self.deploy_task_id} recorded no deploy or rollback")
        from airflow.sdk import AssetAlias

        for outlet in self.outlets:
            if isinstance(outlet, AssetAlias):  # a DAG deploying to one of several endpoints
                from operators.deploy.steps import endpoint_asset

                context["outlet_events"][outlet].add(endpoint_asset(record["endpoint"]), extra=record)
            else:
                context["outlet_events"][outlet].extra = record
        self.log.info("Ledger: %s", record)
        from operators.alerts import SlackAlert, ledger_text

        if text := ledger_text(record):
            try:
                SlackAlert(text=text).notify(context)  # not rendered: the record is data, not a template
            except Exception as exc:  # noqa: BLE001 - the ledger entry matters more than its alert
                self.log.error("Slack alert not sent: %s", exc)
        return record


class FailIfUpstreamFailedOperator(BaseOperator):
    """The 'watcher' pattern: a leaf that fails the run when any upstream task failed, and says
    which task really failed: the watched deploy (with the ledger's reason), or an earlier task
    (when the deploy never ran because something before it failed)."""

    no_retry_reason = "it exists to fail the run"

    def __init__(self, *, watched_task_id: str = "deploy", **kwargs) -> None:
        kwargs.setdefault("trigger_rule", "one_failed")
        kwargs.setdefault("retries", 0)
        kwargs.setdefault("on_failure_callback", None)  # the failed task it reports has alerted already
        super().__init__(**kwargs)
        self.watched_task_id = watched_task_id

    def execute(self, context: Context) -> None:
        ti, run_id = context["ti"], context["run_id"]
        states = ti.get_task_states(dag_id=context["dag"].dag_id, run_ids=[run_id]).get(run_id, {})
        failed = sorted(task for task, state in states.items() if state == "failed" and task != self.task_id)
        if self.watched_task_id in failed:
            record = ti.xcom_pull(task_ids=self.watched_task_id, key="ledger") or {}
            detail = f" ({record['outcome']}: {record.get('reason')})" if record.get("outcome") else ""
            raise AirflowFailException(f"task {self.watched_task_id!r} failed{detail}; see its log")
        raise AirflowFailException(f"task(s) {failed or 'upstream'} failed, so {self.watched_task_id!r} never ran; "
                                   f"see the failed task's log")


def version_before_current(events: Iterable[dict[str, Any]]) -> str | None:
    """From ledger records (oldest first): the version served before the one serving now."""
    serving = [e for e in events if e.get("outcome") in ("serving", "rolled_back")]
    if not serving:
        return None
    last = serving[-1]
    if last.get("outcome") == "rolled_back":  # the rollback restored `version`; what came before it?
        earlier = [e for e in serving[:-1] if e.get("version") == last.get("version")]
        return earlier[-1].get("previous_version") if earlier else None
    return last.get("previous_version")
