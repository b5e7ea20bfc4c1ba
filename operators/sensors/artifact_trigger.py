"""ArtifactTrigger: the triggerer-side wait for a manifest, so a waiting sensor holds no worker slot."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import datetime, timezone
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent


def find_manifest(uri: str, kind: str) -> dict[str, Any] | None:
    """None while there is no manifest; raises if one of another kind is there."""
    from ml import artifacts

    if not artifacts.manifest_exists(uri):
        return None
    manifest = artifacts.read_manifest(uri, kind=kind)
    return {"digest": manifest.digest, "created_at": manifest.created_at}


class ArtifactTrigger(BaseTrigger):
    """Fires once when ``uri/manifest.json`` of ``kind`` exists, or at ``deadline`` (ISO time).

    The deadline is absolute, so a triggerer restart does not extend the wait.
    """

    def __init__(self, uri: str, kind: str, poke_interval: float, deadline: str):
        super().__init__()
        self.uri = uri
        self.kind = kind
        self.poke_interval = poke_interval
        self.deadline = deadline

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {"uri": self.uri, "kind": self.kind, "poke_interval": self.poke_interval, "deadline": self.deadline},
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        deadline = datetime.fromisoformat(self.deadline)
        while True:
            try:
                found = await asyncio.to_thread(find_manifest, self.uri, self.kind)
            except Exception as exc:  # wrong kind, unreadable manifest: report, do not hang
                yield TriggerEvent({"status": "error", "uri": self.uri, "message": str(exc)})
                return
            if found is not None:
                yield TriggerEvent({"status": "found", "uri": self.uri, **found})
                return
            if datetime.now(timezone.utc) >= deadline:
                yield TriggerEvent({"status": "timeout", "uri": self.uri})
                return
            self.log.info("No %s manifest at %s yet; next check in %ss", self.kind, self.uri, self.poke_interval)
            await asyncio.sleep(self.poke_interval)
