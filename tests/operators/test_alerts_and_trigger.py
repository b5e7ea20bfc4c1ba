"""What an operator on call reads and waits on: the Slack text of every deploy outcome (the
alert goes out even when the registry cannot give metrics), the deploy trigger's patience with a
status API that errors, and the published-snapshot path's refusals."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace
from unittest import mock

import pytest
from airflow.sdk.exceptions import AirflowFailException

from operators.alerts import ledger_text
from operators.deploy.targets import DeployStatus
from operators.deploy.trigger import DeployStatusTrigger

RECORD = {"model": "churn", "endpoint": "prod", "run_id": "manual__1", "version": "1", "failed_version": "2",
          "previous_version": "2", "reason": "automatic rollback: smoke test failed: 3 predictions for 32 rows"}


@pytest.mark.parametrize("outcome,says", [
    ("rolled_back", "rolled back to version 1"),
    ("rollback_failed", "ROLLBACK FAILED"),
    ("failed_no_previous", "nothing to roll back to"),
])
def test_every_failed_deploy_outcome_alerts_with_the_failed_version_and_reason(outcome, says):
    text = ledger_text({**RECORD, "outcome": outcome})
    assert text.startswith(":rotating_light: *churn* version 2 on endpoint `prod`: " + says)
    assert "Reason: automatic rollback: smoke test failed" in text and "Run `manual__1`" in text


def test_a_refused_deploy_is_not_alerted_twice_and_a_serving_one_alerts_without_metrics_if_need_be():
    assert ledger_text({**RECORD, "outcome": "refused"}) is None  # the task failure alert covers it
    with mock.patch("operators.alerts._metric_line", side_effect=ConnectionError("registry down")):
        text = ledger_text({**RECORD, "outcome": "serving", "version": "2", "previous_version": "1",
                            "seconds_to_serve": 4.2})
    assert text.startswith(":rocket: *churn* version 2 serves on endpoint `prod` (before: 1; 4.2 s to serve)")
    assert "metrics unavailable (ConnectionError)" in text


def run_trigger(statuses, deadline_in: float) -> dict:
    """The trigger's first event, its target answering ``statuses`` in turn (an exception: the
    status API failed that time)."""
    answers = iter(statuses)

    async def status(handle):
        answer = next(answers, statuses[-1])
        if isinstance(answer, Exception):
            raise answer
        return answer

    deadline = (datetime.now(timezone.utc) + timedelta(seconds=deadline_in)).isoformat()
    trigger = DeployStatusTrigger({"kind": "local", "endpoint": "prod"}, deadline, poll_interval=0.01)

    async def first():
        async for event in trigger.run():
            return event.payload

    with mock.patch("operators.deploy.targets.target_class", return_value=SimpleNamespace(status=status)):
        return asyncio.run(first())


def test_a_status_api_error_is_asked_again_not_taken_for_a_verdict():
    event = run_trigger([ConnectionError("refused"), DeployStatus("progressing", "starting"),
                         DeployStatus("serving", "ok", version="2")], deadline_in=30)
    assert event["status"] == "serving" and event["version"] == "2"


def test_at_the_deadline_the_last_known_reason_is_reported():
    event = run_trigger([DeployStatus("progressing", "1 of 3 replicas ready")], deadline_in=0.05)
    assert event == {"status": "timeout", "reason": "1 of 3 replicas ready", "version": None}
    never = run_trigger([ConnectionError("refused")], deadline_in=0.05)
    assert never == {"status": "timeout", "reason": "no status", "version": None}


def published(uri: str | None):
    event = SimpleNamespace(asset=SimpleNamespace(name="churn.training_snapshots"), extra={"uri": uri} if uri else {},
                            timestamp=datetime.now(timezone.utc), source_dag_id=None)
    return {"triggering_asset_events": {"churn.training_snapshots": [event]}}


def test_a_published_event_without_a_usable_snapshot_fails_the_run_saying_why(tmp_path):
    from operators.extract.published_snapshots import take_published_snapshot

    log = mock.Mock()
    with pytest.raises(AirflowFailException, match="has no extra 'uri' naming the snapshot"):
        take_published_snapshot(published(None), "churn.training_snapshots", "churn", log)
    with pytest.raises(AirflowFailException, match=f"published snapshot {tmp_path} cannot be used: .*no manifest"):
        take_published_snapshot(published(str(tmp_path)), "churn.training_snapshots", "churn", log)
    assert take_published_snapshot({}, "churn.training_snapshots", "churn", log) is None  # a cron run


def test_a_registry_that_cannot_search_tags_does_not_block_training(tmp_path):
    from mlflow.exceptions import MlflowException

    from operators.extract.published_snapshots import _trained_version

    with mock.patch("operators.registry.mlflow_tracking.mlflow_target") as target:
        target.return_value.client.return_value.search_model_versions.side_effect = MlflowException("bad filter")
        assert _trained_version("churn", "abc", "mlflow_default") is None
