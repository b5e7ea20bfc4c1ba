"""AwaitEvidenceOperator: promotion to the next level waits, deferred, for evidence from the
level below (operators/deploy/evidence.py), never for a fixed sleep.

It reads both endpoints' URLs from their targets (an ml.serve endpoint: the local target, or
one reached by URL through its connection), samples them once, and defers to
``EvidenceTrigger`` until the window's end. ``promote`` returns the figures (the next tasks move
the alias and deploy); ``refuse`` and ``timeout`` fail the task, so the higher level keeps its
version, and say why with the figures. A level whose endpoint has no ``/metrics`` the workers can
reach (SageMaker, Vertex AI, a Kubernetes Service inside the cluster) is refused at once with
what to give instead: an ml.serve URL connection, or ``approval: true``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException

if TYPE_CHECKING:
    from airflow.sdk import Context


def endpoint_url(level: dict[str, Any], what: str) -> str:
    """The URL of a level's ml.serve endpoint, or a failure saying what to give instead."""
    from operators.deploy.targets import get_target

    target = get_target(level.get("target") or None, level["endpoint"], level["conn_id"], {})
    url = getattr(target, "url", None)
    if not url:
        raise AirflowFailException(
            f"endpoint {level['endpoint']} ({target.kind}) has no {what} the workers can reach, so there is "
            f"no evidence to wait for: give it an ml.serve URL connection ({level['conn_id']}), or give the "
            f"next level `approval: true` in the model spec")
    return url


SETTLE_SECONDS = 20.0  # the trigger's quiet start: EvidenceTrigger's settle_seconds says why


def settle_seconds() -> float:
    """SETTLE_SECONDS, unless ML_EVIDENCE_SETTLE_SECONDS says otherwise: `make demo` runs
    `airflow dags test`, where the trigger runs inline in the task's own process and no scheduler
    can race it, so it sets 0 (40 s less for its two promotions)."""
    import os

    return float(os.environ.get("ML_EVIDENCE_SETTLE_SECONDS", SETTLE_SECONDS))


class AwaitEvidenceOperator(BaseOperator):
    template_fields: Sequence[str] = ("version",)
    ui_color = "#e8f7e4"

    def __init__(self, *, version, lower: dict[str, Any], higher: dict[str, Any], rules: dict[str, Any],
                 window_minutes: float = 30, poll_interval: float = 5.0, **kwargs) -> None:
        # A refusal is the evidence's verdict and never retried (AirflowFailException). The one retry
        # is for a try lost outside the task: Airflow 3.3.2's scheduler fails a deferred task whose
        # trigger fired before it processed the deferring try's exit (apache/airflow#67287; seen here
        # when the evidence was in at the first poll), or a dead worker. It opens a new window.
        kwargs.setdefault("retries", 1)
        super().__init__(**kwargs)
        self.version, self.lower, self.higher, self.rules = version, lower, higher, rules
        self.window_minutes, self.poll_interval = window_minutes, poll_interval

    def _url(self, level: dict[str, Any]) -> str:
        return endpoint_url(level, "/metrics")

    def execute(self, context: Context) -> None:
        from operators.deploy.evidence import Rules
        from operators.deploy.evidence_trigger import EvidenceTrigger, read_sample

        lower_url, higher_url = self._url(self.lower), self._url(self.higher)
        lower = read_sample(lower_url)
        if lower is None:
            raise AirflowFailException(f"endpoint {self.lower['endpoint']} does not answer at {lower_url}/metrics: "
                                       f"version {self.version} cannot show evidence there")
        higher = read_sample(higher_url)  # None: the higher level serves nothing yet (no baseline)
        rules = Rules.from_spec(self.rules)
        deadline = datetime.now(timezone.utc) + timedelta(minutes=float(self.window_minutes))
        self.log.info("Waiting up to %s min for evidence on %s that version %s may go to %s: %s",
                      self.window_minutes, self.lower["endpoint"], self.version, self.higher["endpoint"], rules)
        self.defer(trigger=EvidenceTrigger(lower_url, higher_url if higher is not None else None, str(self.version),
                                           {"lower": lower.as_dict(), "higher": higher.as_dict() if higher else None},
                                           vars(rules), deadline.isoformat(), self.poll_interval,
                                           settle_seconds=settle_seconds()),
                   method_name="decided", timeout=timedelta(minutes=float(self.window_minutes) + 5))

    def decided(self, context: Context, event: dict[str, Any]) -> dict[str, Any]:
        if event["decision"] == "promote":
            self.log.info("Evidence holds: %s", event["reason"])
            return event
        what = "not enough evidence within the window" if event["decision"] == "timeout" else "evidence against it"
        raise AirflowFailException(f"version {self.version} is not promoted to {self.higher['endpoint']} ({what}): "
                                   f"{event['reason']}; {self.higher['endpoint']} keeps its version")
