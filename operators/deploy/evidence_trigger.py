"""EvidenceTrigger: sample two endpoints' ``/metrics`` in the triggerer until the candidate's
evidence decides (operators/deploy/evidence.py), so a promotion that waits 30 minutes holds no
worker slot. It carries the endpoints' URLs (no secrets: ``/metrics`` needs no token), the first
samples, the rules and an absolute deadline."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import datetime, timezone
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent


def read_sample(url: str, timeout: float = 5.0):
    """One endpoint's counters now, or None when it does not answer."""
    import urllib.error
    import urllib.request

    from operators.deploy.evidence import parse_metrics

    try:
        with urllib.request.urlopen(url.rstrip("/") + "/metrics", timeout=timeout) as answer:
            return parse_metrics(answer.read().decode())
    except (OSError, urllib.error.URLError):
        return None


class EvidenceTrigger(BaseTrigger):
    """Fires ``promote`` or ``refuse`` (with the figures), or ``timeout`` at ``deadline``."""

    def __init__(self, lower_url: str, higher_url: str | None, version: str, first: dict[str, Any], rules: dict,
                 deadline: str, poll_interval: float = 5.0, settle_seconds: float = 0.0):
        """``settle_seconds``: no event before then. Airflow 3.3.2's scheduler fails a deferred task
        whose trigger fires before it has processed the deferring try's exit (apache/airflow#67287),
        which took 1.5-5.5 s under CI's load while evidence was in at the first poll."""
        super().__init__()
        self.lower_url, self.higher_url, self.version = lower_url, higher_url, version
        self.first, self.rules, self.deadline, self.poll_interval = first, rules, deadline, poll_interval
        self.settle_seconds = settle_seconds

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (f"{type(self).__module__}.{type(self).__qualname__}",
                {"lower_url": self.lower_url, "higher_url": self.higher_url, "version": self.version,
                 "first": self.first, "rules": self.rules, "deadline": self.deadline,
                 "poll_interval": self.poll_interval, "settle_seconds": self.settle_seconds})

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from operators.deploy.evidence import Rules, Sample, verdict

        rules, deadline = Rules(**self.rules), datetime.fromisoformat(self.deadline)
        lower_first, higher_first = Sample.from_dict(self.first["lower"]), Sample.from_dict(self.first.get("higher"))
        why = "no sample yet"
        await asyncio.sleep(self.settle_seconds)
        while True:
            lower = await asyncio.to_thread(read_sample, self.lower_url)
            higher = await asyncio.to_thread(read_sample, self.higher_url) if self.higher_url else None
            if lower is not None and lower.version not in (None, self.version):
                yield TriggerEvent({"decision": "refuse", "reason": f"the level below serves version {lower.version} "
                                                                    f"now, not {self.version}: its evidence is gone"})
                return
            if lower is not None:
                decision, why = verdict(lower.since(lower_first), higher.since(higher_first) if higher else None, rules)
                self.log.info("evidence for version %s: %s: %s", self.version, decision, why)
                if decision != "wait":
                    yield TriggerEvent({"decision": decision, "reason": why})
                    return
            else:
                self.log.warning("%s/metrics does not answer (will ask again)", self.lower_url)
            if datetime.now(timezone.utc) >= deadline:
                yield TriggerEvent({"decision": "timeout", "reason": why})
                return
            await asyncio.sleep(self.poll_interval)
