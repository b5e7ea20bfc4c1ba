"""ArtifactSensor: gate a step on the arrival of the artifact it needs (its manifest)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseSensorOperator
from airflow.sdk.exceptions import AirflowException, AirflowSensorTimeout

if TYPE_CHECKING:
    from airflow.sdk import Context


class ArtifactSensor(BaseSensorOperator):
    """Wait for ``uri/manifest.json`` of ``kind`` ("snapshot" or "model"), verify it, return it.

    Deferrable by default: the wait always runs in the triggerer (``ArtifactTrigger``) and holds
    no worker slot; ``deferrable=False`` uses ordinary poke/reschedule mode. Every file digest
    is verified before the manifest is returned, so downstream tasks get a usable artifact.

    :returns: the manifest as a dict (uri, kind, digest, row_count, schema, lineage, extra).
    """

    template_fields: Sequence[str] = ("uri",)
    ui_color = "#e8f7e4"

    def __init__(self, *, uri: str, kind: str, deferrable: bool = True, verify: bool = True, **kwargs) -> None:
        kwargs.setdefault("poke_interval", 30)
        kwargs.setdefault("timeout", 6 * 60 * 60)
        super().__init__(**kwargs)
        from ml.artifacts import KINDS

        if kind not in KINDS:
            raise ValueError(f"ArtifactSensor kind must be one of {KINDS}, got {kind!r}")
        self.uri = uri
        self.kind = kind
        self.deferrable = deferrable
        self.verify = verify

    def _timeout_message(self) -> str:
        return (
            f"Timed out after {self.timeout:.0f}s waiting for a {self.kind} manifest at "
            f"{self.uri}/manifest.json; check that the producing task wrote to this URI"
        )

    def _load(self) -> dict[str, Any]:
        from dataclasses import asdict

        from ml import artifacts

        manifest = (artifacts.open_verified if self.verify else artifacts.read_manifest)(self.uri, kind=self.kind)
        self.log.info("Found %s at %s (digest %s)", self.kind, self.uri, manifest.digest)
        body = asdict(manifest)
        body["files"] = [asdict(f) for f in manifest.files]
        return body

    def poke(self, context: Context) -> bool:
        from ml import artifacts

        if not artifacts.manifest_exists(self.uri):
            self.log.info("No %s manifest at %s yet", self.kind, self.uri)
            return False
        return True

    def execute(self, context: Context) -> dict[str, Any]:
        if self.deferrable:
            # Always through the triggerer: the check there is one cheap listing, and the wait
            # (of any length) holds no worker slot. The trigger fires at once if the manifest is
            # already there.
            deadline = datetime.now(timezone.utc) + timedelta(seconds=self.timeout)
            from operators.sensors.artifact_trigger import ArtifactTrigger

            self.defer(
                trigger=ArtifactTrigger(self.uri, self.kind, self.poke_interval, deadline.isoformat()),
                method_name="execute_complete",
                # a backstop only: the trigger itself reports the timeout with the URI
                timeout=timedelta(seconds=self.timeout + 5 * self.poke_interval + 60),
            )
        else:
            try:
                super().execute(context)
            except AirflowSensorTimeout:
                raise AirflowSensorTimeout(self._timeout_message()) from None
        return self._load()

    def execute_complete(self, context: Context, event: dict[str, Any]) -> dict[str, Any]:
        status = event.get("status")
        if status == "timeout":
            raise AirflowSensorTimeout(self._timeout_message())
        if status != "found":
            raise AirflowException(f"Waiting for {self.kind} at {self.uri} failed: {event.get('message')}")
        return self._load()
