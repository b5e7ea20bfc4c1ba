"""The deploy-target interface the deploy operator speaks."""

from __future__ import annotations

import abc
from dataclasses import dataclass


class DeployRefusedError(RuntimeError):
    """The target refused the new version (e.g. a digest mismatch); what served before still serves."""


@dataclass(frozen=True)
class Served:
    version: str
    uri: str


class DeployTarget(abc.ABC):
    endpoint: str

    @property
    @abc.abstractmethod
    def url(self) -> str:
        """Base URL of the endpoint's ml.serve contract (/ping, /invocations), reachable from
        every Airflow component (worker and triggerer may run on different hosts)."""

    @abc.abstractmethod
    def current(self) -> Served | None:
        """The version the endpoint serves now (asked through its URL), if any."""

    @abc.abstractmethod
    def deploy(self, uri: str, version: str) -> dict:
        """Ask the endpoint to serve ``uri`` as ``version``; returns facts for the task log.

        Does not wait for the new version to serve: the caller waits (deferred) on /ping.
        Raises DeployRefusedError when the endpoint refuses it.
        """

    @abc.abstractmethod
    def confirm(self, served: Served, **facts) -> None:
        """Record that ``served`` passed verification, with facts to show (e.g. seconds to serve)."""
