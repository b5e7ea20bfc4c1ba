"""ArtifactSensor and ArtifactTrigger: defer, wake on the manifest, time out naming the URI."""

from __future__ import annotations

import asyncio
import importlib
import threading
import time
from datetime import datetime, timedelta, timezone

import pyarrow as pa
import pytest
from airflow.sdk.exceptions import AirflowException, AirflowSensorTimeout, TaskDeferred

from operators.sensors.artifact_sensor import ArtifactSensor
from operators.sensors.artifact_trigger import ArtifactTrigger
from tests.helpers import write_snapshot

TABLE = pa.table({"x": [1, 2, 3]})


async def first_event(trigger: ArtifactTrigger):
    async for event in trigger.run():
        return event.payload


def test_defers_when_absent_then_returns_the_verified_manifest(tmp_path, make_context):
    uri = str(tmp_path / "snap")
    sensor = ArtifactSensor(task_id="wait", uri=uri, kind="snapshot", poke_interval=0.05, timeout=30)
    with pytest.raises(TaskDeferred) as deferred:
        sensor.execute(make_context())
    trigger = deferred.value.trigger
    assert isinstance(trigger, ArtifactTrigger) and deferred.value.method_name == "execute_complete"
    assert deferred.value.timeout > timedelta(seconds=30)  # the trigger reports the timeout itself

    threading.Timer(0.3, write_snapshot, args=(uri, TABLE)).start()
    started = time.monotonic()
    event = asyncio.run(first_event(trigger))
    assert event["status"] == "found" and time.monotonic() - started >= 0.25
    manifest = sensor.execute_complete(make_context(), event)
    assert manifest["kind"] == "snapshot" and manifest["row_count"] == 3 and manifest["digest"] == event["digest"]
    (entry,) = manifest["files"]
    assert entry["path"].endswith("/part-00000.parquet") and len(entry["sha256"]) == 64 and entry["size"] > 0


def test_present_artifact_fires_at_the_first_check_in_the_triggerer(tmp_path, make_context):
    """Deferrable sensors always wait in the triggerer; one that is already there fires at once."""
    uri = str(tmp_path / "snap")
    written = write_snapshot(uri, TABLE)
    sensor = ArtifactSensor(task_id="wait", uri=uri, kind="snapshot", poke_interval=60)
    with pytest.raises(TaskDeferred) as deferred:
        sensor.execute(make_context())
    started = datetime.now(timezone.utc)
    event = asyncio.run(first_event(deferred.value.trigger))
    assert event["status"] == "found" and (datetime.now(timezone.utc) - started) < timedelta(seconds=10)
    assert sensor.execute_complete(make_context(), event)["digest"] == written.digest


def test_poke_mode_returns_a_present_artifact_in_the_worker(tmp_path, make_context):
    uri = str(tmp_path / "snap")
    written = write_snapshot(uri, TABLE)
    sensor = ArtifactSensor(task_id="wait", uri=uri, kind="snapshot", deferrable=False)
    assert sensor.execute(make_context())["digest"] == written.digest


def test_trigger_timeout_fails_with_the_uri(tmp_path, make_context):
    uri = str(tmp_path / "never")
    sensor = ArtifactSensor(task_id="wait", uri=uri, kind="model", poke_interval=0.05, timeout=0.2)
    with pytest.raises(TaskDeferred) as deferred:
        sensor.execute(make_context())
    event = asyncio.run(first_event(deferred.value.trigger))
    assert event == {"status": "timeout", "uri": uri}
    with pytest.raises(AirflowSensorTimeout, match=f"waiting for a model manifest at {uri}/manifest.json"):
        sensor.execute_complete(make_context(), event)


def test_trigger_reports_a_manifest_of_the_wrong_kind(tmp_path, make_context):
    uri = str(tmp_path / "snap")
    write_snapshot(uri, TABLE)
    deadline = (datetime.now(timezone.utc) + timedelta(seconds=5)).isoformat()
    event = asyncio.run(first_event(ArtifactTrigger(uri, "model", 0.05, deadline)))
    assert event["status"] == "error" and "expected 'model'" in event["message"]
    sensor = ArtifactSensor(task_id="wait", uri=uri, kind="model")
    with pytest.raises(AirflowException, match="expected 'model'"):
        sensor.execute_complete(make_context(), event)


def test_poke_mode_timeout_names_the_uri(tmp_path, make_context):
    uri = str(tmp_path / "never")
    sensor = ArtifactSensor(task_id="wait", uri=uri, kind="snapshot", deferrable=False, poke_interval=0.05,
                            timeout=0.3)
    context = make_context()
    context["ti"] = type("TI", (), {"try_number": 1, "max_tries": 0, "task_instance_key_str": "k"})()
    context["task_reschedule_count"] = 0
    with pytest.raises(AirflowSensorTimeout, match=f"snapshot manifest at {uri}/manifest.json"):
        sensor.execute(context)


def test_tampered_artifact_is_not_handed_downstream(tmp_path, make_context):
    uri = str(tmp_path / "snap")
    manifest = write_snapshot(uri, TABLE)
    (tmp_path / "snap" / manifest.files[0].path).write_bytes(b"tampered")
    sensor = ArtifactSensor(task_id="wait", uri=uri, kind="snapshot")
    from ml.artifacts import ArtifactCorruptError

    with pytest.raises(TaskDeferred) as deferred:
        sensor.execute(make_context())
    event = asyncio.run(first_event(deferred.value.trigger))
    with pytest.raises(ArtifactCorruptError):
        sensor.execute_complete(make_context(), event)


def test_trigger_serializes_to_an_importable_classpath():
    trigger = ArtifactTrigger("s3://b/k", "snapshot", 5.0, "2026-01-01T00:00:00+00:00")
    classpath, kwargs = trigger.serialize()
    module, name = classpath.rsplit(".", 1)
    rebuilt = getattr(importlib.import_module(module), name)(**kwargs)
    assert classpath == "operators.sensors.artifact_trigger.ArtifactTrigger"
    assert rebuilt.serialize() == (classpath, kwargs)


def test_unknown_kind_is_rejected_at_parse_time():
    with pytest.raises(ValueError, match="kind must be one of"):
        ArtifactSensor(task_id="wait", uri="/x", kind="dataset")
