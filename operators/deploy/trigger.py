"""DeployStatusTrigger: wait, in the triggerer, until a deploy serves or fails, for every target.

It carries only the deploy's handle (target kind, endpoint, connection id, settings, what was
asked: names, no secrets) and an absolute deadline, and asks the target's ``status(handle)``
(through the target's own API: /ping for ml.serve, the Kubernetes API for a Deployment). The
triggerer may run on another host or container than the worker that started the deploy.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import datetime, timezone
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent


class DeployStatusTrigger(BaseTrigger):
    """Fires ``serving`` or ``failed`` (with the target's reason), or ``timeout`` at ``deadline``."""

    def __init__(self, handle: dict[str, Any], deadline: str, poll_interval: float = 0.5):
        super().__init__()
        self.handle, self.deadline, self.poll_interval = handle, deadline, poll_interval

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (f"{type(self).__module__}.{type(self).__qualname__}",
                {"handle": self.handle, "deadline": self.deadline, "poll_interval": self.poll_interval})

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from operators.deploy.targets import target_class

        target = target_class(self.handle["kind"])
        deadline = datetime.fromisoformat(self.deadline)
        last = None
        while True:
            try:
                last = await target.status(self.handle)
            except Exception as exc:  # noqa: BLE001 - an API hiccup is not a verdict; the deadline is
                self.log.warning("status of %s failed (will ask again): %s", self.handle["endpoint"], exc)
            if last is not None and last.done:
                yield TriggerEvent({"status": last.state, "reason": last.reason, "version": last.version,
                                    "at": datetime.now(timezone.utc).isoformat()})
                return
            if datetime.now(timezone.utc) >= deadline:
                yield TriggerEvent({"status": "timeout", "reason": last.reason if last else "no status",
                                    "version": last.version if last else None})
                return
            await asyncio.sleep(self.poll_interval)
