"""The deployment ledger: asset events on the endpoint's asset, one per deploy or rollback.

The deploy task pushes its outcome to XCom (``ledger``) whether it succeeds or fails;
``RecordLedgerOperator`` runs after it whatever happened (trigger rule all_done) and emits
that record as the asset event, because Airflow emits outlet events only for successful
tasks. ``FailIfUpstreamFailedOperator`` then keeps the DAG run failed when the deploy failed.
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
        for outlet in self.outlets:
            context["outlet_events"][outlet].extra = record
        self.log.info("Ledger: %s", record)
        return record


class FailIfUpstreamFailedOperator(BaseOperator):
    """The 'watcher' pattern: a leaf that fails the run when any upstream task failed."""

    no_retry_reason = "it exists to fail the run"

    def __init__(self, **kwargs) -> None:
        kwargs.setdefault("trigger_rule", "one_failed")
        kwargs.setdefault("retries", 0)
        super().__init__(**kwargs)

    def execute(self, context: Context) -> None:
        raise AirflowFailException("an upstream task failed (a deploy was refused or rolled back); see its log")


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
