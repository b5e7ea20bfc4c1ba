"""EndpointVersionTrigger: wait, in the triggerer, until an endpoint's /ping reports a version.

It carries only the endpoint's URL, the version and an absolute deadline, and asks the
endpoint itself: the triggerer may run on another host or container than the worker that
started the deploy, so nothing here may depend on that worker's processes or files.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import datetime, timezone
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent


class EndpointVersionTrigger(BaseTrigger):
    """Fires ``serving`` when ``url/ping`` reports ``version``; ``timeout`` at ``deadline``."""

    def __init__(self, url: str, version: str, deadline: str, poll_interval: float = 0.2):
        super().__init__()
        self.url, self.version, self.deadline, self.poll_interval = url, version, deadline, poll_interval

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (f"{type(self).__module__}.{type(self).__qualname__}",
                {"url": self.url, "version": self.version, "deadline": self.deadline,
                 "poll_interval": self.poll_interval})

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from operators.endpoint_client import ping

        deadline = datetime.fromisoformat(self.deadline)
        while True:
            answer = await asyncio.to_thread(ping, self.url)
            last = answer.get("model_version") if answer else None
            if last == self.version:
                yield TriggerEvent({"status": "serving", "version": last,
                                    "at": datetime.now(timezone.utc).isoformat()})
                return
            if datetime.now(timezone.utc) >= deadline:
                yield TriggerEvent({"status": "timeout", "version": last})
                return
            await asyncio.sleep(self.poll_interval)
