"""DeployModelOperator: deploy a registered version, wait until it serves, smoke-test it, and
roll back by itself when anything fails, so a bad model never stays in front of users.

Every outcome (deployed, rolled back, refused) is pushed to XCom under ``ledger`` before the
task ends; ``record_ledger`` (see ``operators.deploy.ledger``) turns it into an asset event on
the endpoint's asset, since Airflow emits outlet events only for successful tasks.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowException, AirflowFailException

if TYPE_CHECKING:
    from airflow.sdk import Context


class SmokeTestFailed(Exception):
    """The new version did not answer the smoke test correctly; the deploy is rolled back."""


class DeployModelOperator(BaseOperator):
    """Deploy ``model_name`` ``version`` (or the version behind ``alias``) to ``endpoint``.

    The target does the work (``operators/deploy/targets``); this operator only sequences it:
    resolve -> ``target.deploy`` -> defer on ``DeployStatusTrigger`` -> smoke test through
    ``target.invoke`` -> confirm, or ``target.rollback`` and fail with the reason.

    :param target: deploy target kind (``local``, ``kubernetes``); None: the connection's extra
        ``target``, else ``local``. ``target_settings`` override the connection's extras.
    :param target_conn_id: the endpoint's connection (URL and admin token for an ml.serve
        endpoint; kube connection id and settings for Kubernetes). When it does not exist the
        local target manages a server on this machine.
    :param smoke_rows: held-out rows of the model artifact sent through the endpoint after the deploy.
    :param min_smoke_accuracy: for classifiers, the smoke test fails below this accuracy.
    :param wait_timeout: seconds to wait for the endpoint to serve the new version.
    :param wait_in_task: of those, seconds to wait inside the task before deferring to the
        triggerer; None: the target's own (30 s for a local server, which starts in seconds,
        where a deferral would add a trigger poll and a scheduler round trip; 0 for rollouts
        of minutes, which should free the worker slot).
    :param reason: recorded in the ledger ("deploy", "rollback", ...).
    :param canary_percent: the share the new version takes first beside the serving one
        (kubernetes: of the replicas; sagemaker: blue/green canary; vertex: of the traffic);
        templated, e.g. from a Param; empty: the target's own setting.
    :param smoke_protocol: how the smoke test calls the endpoint: ``invocations`` (ml.serve's own
        route), ``v2`` (the Open Inference Protocol over REST) or ``grpc`` (over gRPC), each
        request naming the version it expects; templated; empty: ``ML_DEPLOY_SMOKE_PROTOCOL``, else
        ``invocations``. A target that cannot speak it is refused before anything is deployed.
    """

    template_fields: Sequence[str] = ("model_name", "version", "alias", "endpoint", "reason", "canary_percent",
                                       "target", "target_conn_id", "smoke_protocol")
    ui_color = "#ffd9d9"
    no_retry_reason = "a failed deploy is already rolled back; retrying would put the bad version back in traffic"

    def __init__(self, *, model_name: str, endpoint: str, version: str | None = None, alias: str | None = None,
                 target: str | None = None, target_settings: dict | None = None,
                 target_conn_id: str | None = "ml_endpoint", mlflow_conn_id: str = "mlflow_default",
                 smoke_rows: int = 32, min_smoke_accuracy: float | None = None, wait_timeout: float = 120,
                 reason: str = "deploy", canary_percent: int | str | None = None, wait_in_task: float | None = None,
                 smoke_protocol: str | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.model_name, self.endpoint, self.version, self.alias = model_name, endpoint, version, alias
        self.target, self.target_settings, self.mlflow_conn_id = target, target_settings or {}, mlflow_conn_id
        self.target_conn_id = target_conn_id
        self.smoke_rows, self.min_smoke_accuracy = smoke_rows, min_smoke_accuracy
        self.wait_timeout, self.reason, self.canary_percent = wait_timeout, reason, canary_percent
        self.wait_in_task = wait_in_task
        self.smoke_protocol = smoke_protocol

    def _protocol(self, target) -> str:
        """The smoke test's protocol, or AirflowFailException when ``target`` cannot speak it."""
        from operators.deploy.open_inference_client import SMOKE_PROTOCOLS

        given = self.smoke_protocol if self.smoke_protocol not in (None, "", "None") else None
        protocol = (given or os.environ.get("ML_DEPLOY_SMOKE_PROTOCOL") or "invocations").strip().lower()
        if protocol not in SMOKE_PROTOCOLS:
            raise AirflowFailException(f"smoke_protocol {protocol!r} is not one of {', '.join(SMOKE_PROTOCOLS)} "
                                       f"(ML_DEPLOY_SMOKE_PROTOCOL, or the level's smoke_protocol in its model spec)")
        if protocol not in target.protocols:
            raise AirflowFailException(f"the {target.kind} target's endpoint {self.endpoint} cannot be smoke-tested "
                                       f"over {protocol}: it speaks {', '.join(target.protocols)}; nothing was deployed")
        return protocol

    def _resolve(self):
        from operators.registry.mlflow_tracking import mlflow_target

        client = mlflow_target(self.mlflow_conn_id).client()
        if self.version:
            return client.get_model_version(self.model_name, str(self.version))
        if self.alias:
            return client.get_model_version_by_alias(self.model_name, self.alias)
        raise AirflowFailException("give a version or an alias to deploy")

    def _ledger(self, context: Context, **entry) -> dict:
        record = {"endpoint": self.endpoint, "model": self.model_name, "run_id": context["run_id"],
                  "at": datetime.now(timezone.utc).isoformat(), **entry}
        context["ti"].xcom_push(key="ledger", value=record)
        return record

    def execute(self, context: Context) -> dict[str, Any]:
        from operators.deploy.targets import DeployRefusedError, Served, get_target
        from operators.deploy.trigger import DeployStatusTrigger

        mv = self._resolve()
        asked = Served(str(mv.version), mv.source, name=self.model_name)
        settings = dict(self.target_settings)
        if self.canary_percent not in (None, "", "None"):
            try:
                settings["canary_percent"] = int(self.canary_percent)
            except ValueError:
                raise AirflowFailException(f"canary_percent must be a whole number, got {self.canary_percent!r}") from None
        try:
            target = get_target(self.target or None, self.endpoint, self.target_conn_id, settings)
        except ValueError as exc:
            raise AirflowFailException(f"endpoint {self.endpoint}: {exc}") from None
        self._protocol(target)  # before anything changes
        previous = target.current()
        if previous is not None and previous.live and previous.as_dict() == asked.as_dict():
            self.log.info("%s already serves %s version %s; nothing to do", self.endpoint, self.model_name,
                          asked.version)
            return {"target": target.kind, "version": asked.version, "previous_version": asked.version,
                    "seconds_to_serve": 0.0}
        started = time.time()
        self.log.info("Deploying %s version %s (%s) to %s endpoint %s; serving before: %s", self.model_name,
                      asked.version, asked.uri, target.kind, self.endpoint, previous.version if previous else "nothing")
        try:
            handle = target.deploy(asked)
        except DeployRefusedError as exc:
            self._ledger(context, version=asked.version, previous_version=previous.version if previous else None,
                         reason=self.reason, outcome="refused", detail=str(exc))
            raise AirflowFailException(f"deploy refused, {previous.version if previous else 'nothing'} still "
                                       f"serves: {exc}") from None
        self.log.info("Deploy asked: %s", handle.get("facts", handle))
        state = {"handle": handle, "started": started, "previous": previous.as_dict() if previous else None}
        first = self._status_now(handle)
        wait_until = time.monotonic() + self._seconds_in_task(target)
        while (first is None or not first.done) and time.monotonic() < wait_until:
            time.sleep(0.2)
            first = self._status_now(handle)
        if first is not None and first.done:  # a hot swap, or a server started within wait_in_task
            target.in_flight = handle
            return self._finish(context, target, state,
                                {"status": first.state, "reason": first.reason, "version": first.version})
        deadline = datetime.now(timezone.utc) + timedelta(seconds=self.wait_timeout)
        # What verify() needs after the deferral, kept in XCom (survives worker and triggerer restarts).
        context["ti"].xcom_push(key="in_flight", value=state)
        self.defer(trigger=DeployStatusTrigger(handle, deadline.isoformat()), method_name="verify",
                   timeout=timedelta(seconds=self.wait_timeout + 60))

    def _seconds_in_task(self, target) -> float:
        """How long to wait for the deploy inside the task: the operator's, else the target's, never
        more than the whole wait."""
        in_task = target.wait_in_task if self.wait_in_task is None else float(self.wait_in_task)
        return max(0.0, min(in_task, self.wait_timeout))

    def _status_now(self, handle: dict[str, Any]):
        """The target's status once, before deferring. Deferring when the deploy is already done
        costs a triggerer round trip, and a resume that fast races the scheduler's handling of
        the deferring workload's exit (Airflow 3.3 can then mark the resumed task failed)."""
        import asyncio

        from operators.deploy.targets import target_class

        try:
            return asyncio.run(target_class(handle["kind"]).status(handle))
        except Exception as exc:  # noqa: BLE001 - the trigger asks again; the deadline decides
            self.log.info("Status not known yet (%s); waiting in the triggerer", exc)
            return None

    def verify(self, context: Context, event: dict[str, Any]) -> dict[str, Any]:
        """Resumed from DeployStatusTrigger: the target and the in-flight state rebuilt from XCom."""
        from operators.deploy.targets import target_from_handle

        state = context["ti"].xcom_pull(task_ids=self.task_id, key="in_flight")
        return self._finish(context, target_from_handle(state["handle"]), state, event)

    def _finish(self, context: Context, target, state: dict[str, Any], event: dict[str, Any]) -> dict[str, Any]:
        """Roll back on a failed status, else smoke-test, confirm and record the deploy."""
        from operators.deploy.targets import Served

        handle, previous = state["handle"], state["previous"]
        asked = Served(handle["version"], handle["uri"], name=self.model_name)
        seconds = round(time.time() - state["started"], 3)
        if event["status"] != "serving":
            self._roll_back(context, target, asked.version, previous,
                            f"version {asked.version} is not serving ({event['status']} after up to "
                            f"{self.wait_timeout:.0f}s): {event.get('reason') or 'no reason given'}")
        try:
            self._smoke_test(target, asked)
        except SmokeTestFailed as exc:
            self._roll_back(context, target, asked.version, previous, f"smoke test failed: {exc}")
        target.confirm(asked, seconds_to_serve=seconds, run_id=context["run_id"])
        self.log.info("%s serves %s version %s, %.2f s after the deploy was asked", self.endpoint, self.model_name,
                      asked.version, seconds)
        self._ledger(context, version=asked.version, previous_version=previous["version"] if previous else None,
                     reason=self.reason, outcome="serving", seconds_to_serve=seconds)
        return {"target": target.kind, "version": asked.version,
                "previous_version": previous["version"] if previous else None, "seconds_to_serve": seconds}

    def _smoke_test(self, target, asked) -> None:
        """Held-out rows in through the target's serving path, one prediction per row out, from
        the new version; accuracy if asked."""
        from ml import artifacts
        from ml.model_io import read_holdout
        from operators.deploy.endpoint_client import EndpointError

        protocol = self._protocol(target)
        manifest = artifacts.read_manifest(asked.uri, kind="model")
        names = [c["name"] for c in manifest.schema]
        holdout = read_holdout(manifest, rows=self.smoke_rows)
        records = holdout.select(names).to_pylist()
        truth = holdout.column(manifest.extra["target"]).to_pylist() if "target" in manifest.extra else None
        try:
            if protocol == "invocations":
                answer = target.invoke(records)
            else:
                from operators.deploy import open_inference_client as oip

                keep = [i for i, r in enumerate(records) if oip.carried(r, manifest.schema)]
                if len(keep) < len(records):
                    self.log.info("%d of %d held-out rows have a missing text or boolean value, which the Open "
                                  "Inference Protocol cannot carry; smoke-testing the other %d", len(records) - len(keep),
                                  len(records), len(keep))
                    records = [records[i] for i in keep]
                    truth = [truth[i] for i in keep] if truth is not None else None
                if not records:
                    raise SmokeTestFailed(f"none of the {self.smoke_rows} held-out rows can travel over {protocol}")
                answer = target.infer(oip.infer_request(asked.name or self.model_name, asked.version, records,
                                                        manifest.schema), protocol)
        except EndpointError as exc:
            raise SmokeTestFailed(str(exc) if protocol == "invocations" else f"over {protocol}: {exc}") from None
        if answer.get("model_version") != asked.version:
            raise SmokeTestFailed(f"answered by version {answer.get('model_version')}, not {asked.version}")
        predictions = answer.get("predictions", [])
        if len(predictions) != len(records):
            raise SmokeTestFailed(f"{len(predictions)} predictions for {len(records)} rows")
        if self.min_smoke_accuracy is not None and manifest.extra.get("task") == "classification":
            accuracy = sum(p == t for p, t in zip(predictions, truth)) / len(truth)
            if accuracy < self.min_smoke_accuracy:
                raise SmokeTestFailed(f"accuracy {accuracy:.3f} on {len(truth)} held-out rows is below "
                                      f"{self.min_smoke_accuracy}")
        self.log.info("Smoke test passed over %s: %d held-out rows predicted by version %s", protocol, len(records),
                      asked.version)

    def _roll_back(self, context: Context, target, version: str, previous: dict | None, reason: str):
        from operators.deploy.targets import Served

        if previous:
            self.log.error("%s; rolling back to version %s", reason, previous["version"])
            try:
                done = target.rollback(Served(previous["version"], previous["uri"], name=self.model_name))
                self.log.info("Rollback: %s", done)
                outcome = "rolled_back"
            except Exception as exc:  # noqa: BLE001 - report both failures
                outcome = "rollback_failed"
                reason = f"{reason}; rollback to {previous['version']} failed too: {exc}"
        else:
            self.log.error("%s; there is no previous version to roll back to", reason)
            outcome = "failed_no_previous"
        self._ledger(context, version=previous["version"] if previous else None, previous_version=version,
                     reason=f"automatic rollback: {reason}", outcome=outcome, failed_version=version)
        raise AirflowException(f"deploy of version {version} failed and was rolled back"
                               f"{' to ' + previous['version'] if previous else ''}: {reason}")
