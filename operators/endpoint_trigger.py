"""EndpointVersionTrigger: wait, in the triggerer, until an endpoint's /ping reports a version."""

from __future__ import annotations

import asyncio
import json
import os
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from datetime import datetime, timezone
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent


def ping(url: str) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(url + "/ping", timeout=2) as resp:
            return json.loads(resp.read())
    except (OSError, urllib.error.URLError, ValueError):
        return None


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


class EndpointVersionTrigger(BaseTrigger):
    """Fires ``serving`` when ``url/ping`` reports ``version``; ``timeout`` at ``deadline``;
    ``died`` when the local serving process (``pid``, if given) has exited."""

    def __init__(self, url: str, version: str, deadline: str, poll_interval: float = 0.2, pid: int | None = None):
        super().__init__()
        self.url, self.version, self.deadline = url, version, deadline
        self.poll_interval, self.pid = poll_interval, pid

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (f"{type(self).__module__}.{type(self).__qualname__}",
                {"url": self.url, "version": self.version, "deadline": self.deadline,
                 "poll_interval": self.poll_interval, "pid": self.pid})

    async def run(self) -> AsyncIterator[TriggerEvent]:
        deadline = datetime.fromisoformat(self.deadline)
        last = None
        while True:
            answer = await asyncio.to_thread(ping, self.url)
            last = answer.get("model_version") if answer else None
            if last == self.version:
                yield TriggerEvent({"status": "serving", "version": last,
                                    "at": datetime.now(timezone.utc).isoformat()})
                return
            if self.pid and not await asyncio.to_thread(pid_alive, self.pid):
                yield TriggerEvent({"status": "died", "version": last})
                return
            if datetime.now(timezone.utc) >= deadline:
                yield TriggerEvent({"status": "timeout", "version": last})
                return
            await asyncio.sleep(self.poll_interval)
