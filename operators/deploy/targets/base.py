"""The deploy-target interface: what DeployModelOperator and DeployStatusTrigger speak.

A deploy is watched anywhere from its *handle*, a JSON-able dict of names only (target kind,
endpoint, connection id, settings, what was asked): the worker that deploys and the triggerer
that watches may run on different hosts or containers, so nothing may depend on one
process's memory or files. Adding a target means one module and one line in ``TARGETS``.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, TypeVar

SpecT = TypeVar("SpecT")


def spec_from_settings(spec_class: type[SpecT], settings: dict[str, Any], target: str,
                       required: tuple[str, ...]) -> SpecT:
    """A target's settings dataclass from connection extras + DAG settings: unknown names and
    missing required ones are refused, naming them and where they are set."""
    known = {f.name for f in fields(spec_class)}
    unknown = sorted(set(settings) - known - {"target"})
    if unknown:
        raise ValueError(f"unknown {target} settings {unknown}; known: {sorted(known)}")
    spec = spec_class(**{k: v for k, v in settings.items() if k in known})
    missing = [n for n in required if not getattr(spec, n)]
    if missing:
        raise ValueError(f"the {target} target needs {missing}: set them in the endpoint connection's extras "
                         f"(or the DAG's target_settings)")
    return spec


class DeployRefusedError(RuntimeError):
    """The target refused the new version (e.g. a digest mismatch, an invalid object); what
    served before still serves."""


@dataclass(frozen=True)
class Served:
    """A model version at an endpoint; ``live`` is False when it is only the last confirmed one
    (the endpoint does not answer now)."""

    version: str
    uri: str
    live: bool = True
    # the registered model's name: the server's name for it in the Open Inference Protocol
    name: str = field(default="", compare=False)

    def as_dict(self) -> dict[str, str]:
        return {"version": self.version, "uri": self.uri}


@dataclass(frozen=True)
class DeployStatus:
    """Where a deploy stands: ``progressing`` (keep waiting), ``serving`` (the asked version
    answers) or ``failed`` (it will not get there by itself; ``reason`` says why)."""

    state: str
    reason: str = ""
    version: str | None = None  # the version the endpoint reports now

    @property
    def done(self) -> bool:
        return self.state in ("serving", "failed")


class DeployTarget(abc.ABC):
    kind: ClassVar[str]
    in_flight: dict[str, Any] | None = None  # the handle of the deploy being verified, when rebuilt from it
    # how long DeployModelOperator waits in the task before deferring: 0 for rollouts of minutes
    wait_in_task: ClassVar[float] = 0.0
    # how the smoke test can reach the endpoint (open_inference_client.SMOKE_PROTOCOLS): ml.serve's
    # /invocations everywhere; the Open Inference Protocol ("v2" REST, "grpc") where the target has it
    protocols: ClassVar[tuple[str, ...]] = ("invocations",)

    def __init__(self, endpoint: str, conn_id: str | None = None, settings: dict[str, Any] | None = None):
        self.endpoint, self.conn_id, self.settings = endpoint, conn_id, dict(settings or {})

    @classmethod
    @abc.abstractmethod
    def from_connection(cls, endpoint: str, conn_id: str | None, conn, settings: dict[str, Any]) -> DeployTarget:
        """The target configured by connection ``conn`` (None when it does not exist) and the
        DAG's ``settings``, which override the connection's extras."""

    def handle(self, **asked: Any) -> dict[str, Any]:
        """What a trigger needs to ask about this deploy, anywhere."""
        return {"kind": self.kind, "endpoint": self.endpoint, "conn_id": self.conn_id,
                "settings": self.settings, **asked}

    @abc.abstractmethod
    def current(self) -> Served | None:
        """The version the endpoint serves now, if any."""

    @abc.abstractmethod
    def deploy(self, served: Served) -> dict[str, Any]:
        """Ask the endpoint to serve ``served``; returns the handle. Does not wait: the caller
        defers on ``status``. Raises DeployRefusedError when the endpoint refuses it."""

    @classmethod
    @abc.abstractmethod
    async def status(cls, handle: dict[str, Any]) -> DeployStatus:
        """Where the deploy of ``handle`` stands, asked through the target's own API from the
        handle alone (the triggerer runs it: no worker files, no synchronous connection reads)."""

    @abc.abstractmethod
    def invoke(self, rows: list) -> dict[str, Any]:
        """Predictions through the endpoint's serving path: ``{"predictions", "model_version"}``.
        Raises operators.deploy.endpoint_client.EndpointError when it does not answer."""

    def infer(self, request, protocol: str) -> dict[str, Any]:
        """Predictions for an ``open_inference_client.InferRequest`` over ``protocol`` ("v2" or
        "grpc", one of ``protocols``), answered as ``invoke`` answers."""
        raise NotImplementedError(f"the {self.kind} target's endpoint speaks only {', '.join(self.protocols)}")

    @abc.abstractmethod
    def rollback(self, previous: Served) -> dict[str, Any]:
        """Put ``previous`` back in front of traffic; returns what was done, for the ledger."""

    def confirm(self, served: Served, **facts: Any) -> None:
        """Record that ``served`` passed verification (seconds to serve, run id...). Optional."""
