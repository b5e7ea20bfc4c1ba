"""One client for the ml.serve HTTP contract (GET /ping, POST /invocations, POST /admin/model).

The local deploy target (its deploy, status and smoke test) and the demo report speak to an
endpoint through these three calls, so the contract is written down on the client side once.
Plain urllib: it runs in the worker, in the triggerer (inside ``asyncio.to_thread``) and in
the demo without another dependency.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any


class EndpointError(RuntimeError):
    """The endpoint answered with an error status (``status``) or could not be reached (``status`` None)."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


def _call(url: str, body: dict | None, timeout: float, headers: dict[str, str] | None = None) -> dict[str, Any]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method="POST" if body is not None else "GET",
                                     headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace")
        try:
            detail = json.loads(detail).get("error", detail)
        except (ValueError, AttributeError):
            pass
        raise EndpointError(f"{url} answered {exc.code}: {detail[:500]}", exc.code) from None
    except (OSError, ValueError) as exc:
        raise EndpointError(f"{url} unreachable: {exc}") from None


def ping(url: str, timeout: float = 2.0) -> dict[str, Any] | None:
    """The endpoint's /ping answer (model_version, digest, source), or None when it has no
    model loaded or cannot be reached."""
    try:
        return _call(url.rstrip("/") + "/ping", None, timeout)
    except EndpointError:
        return None


def invoke(url: str, instances: list, timeout: float = 30.0) -> dict[str, Any]:
    """Predictions for ``instances`` (records or rows): ``{"predictions": [...], "model_version": ...}``."""
    return _call(url.rstrip("/") + "/invocations", {"instances": instances}, timeout)


def swap(url: str, token: str, uri: str, version: str, timeout: float = 120.0, name: str = "") -> dict[str, Any]:
    """Hot-swap the endpoint to the model artifact ``uri`` labelled ``version`` (admin token);
    ``name``, the registered model's, becomes its name in the Open Inference Protocol."""
    return _call(url.rstrip("/") + "/admin/model", {"uri": uri, "version": version, **({"name": name} if name else {})},
                 timeout, headers={"Authorization": f"Bearer {token}"})
