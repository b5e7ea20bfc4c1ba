"""The local target: an ml.serve endpoint, hot-swapped through its admin API.

Two ways to have one:
- **managed** (the embedded default): this target starts ``python -m ml.serve`` on the
  worker's machine when nothing answers, in its own session so it outlives the task. Its
  port, pid, admin token (mode 0600) and server log live in ``<state_dir>/``.
- **reached by URL**: Airflow connection ``ml_endpoint`` (or the one the DAG names) with host,
  port, schema (http) and the admin token as password, e.g. the compose stack's ``serving``
  container (extra ``grpc_port``: where the same host serves gRPC). Nothing is started; every
  deploy is a hot swap.

A managed server captures predictions when the worker's environment sets
``ML_SERVE_CAPTURE_RATE`` (to ``ML_SERVE_CAPTURE_URI``, default ``<artifact root>/captures``,
where ``<name>__monitor`` reads). A managed server also serves the Open Inference Protocol over gRPC, on a port of its own kept
beside the HTTP port, so the deploy's smoke test can go over /invocations, V2 REST or gRPC.

Either way the endpoint's state is read through its URL (``/ping`` reports version and
source), so a triggerer on another host or container sees what the worker sees.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

from operators.artifact_root import artifact_root
from operators.child_env import child_environment
from operators.deploy.targets.base import DeployRefusedError, DeployStatus, DeployTarget, Served
from operators.deploy.endpoint_client import EndpointError, invoke, ping, swap


def default_state_dir() -> Path:
    return Path(os.environ.get("ML_ENDPOINTS_DIR") or Path(os.environ.get("AIRFLOW_HOME", "/tmp")) / "ml-endpoints")


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child of this process counts as dead
        return os.waitpid(pid, os.WNOHANG) == (0, 0)
    except ChildProcessError:
        return True


class LocalServerTarget(DeployTarget):
    kind = "local"
    # a server starts in seconds: waiting in the task spares a trigger poll and a scheduler
    # round trip (a hot swap is done before the first status anyway); 30 s covers a cold start
    # on a loaded machine (about 5 s here, over 10 s under coverage on two busy cores)
    wait_in_task = 30.0
    protocols = ("invocations", "v2", "grpc")

    def __init__(self, endpoint: str, state_dir: str | None = None, host: str | None = None, port: int | None = None,
                 url: str | None = None, admin_token: str | None = None, conn_id: str | None = None,
                 grpc_port: int | None = None):
        super().__init__(endpoint, conn_id, {k: v for k, v in (("state_dir", state_dir), ("host", host),
                                                               ("port", port)) if v is not None})
        self.dir = Path(state_dir) if state_dir else default_state_dir() / endpoint
        self.dir.mkdir(parents=True, exist_ok=True)
        self._state_path = self.dir / "state.json"
        self.managed = url is None
        if self.managed:
            # The host every Airflow component can reach this machine by (the triggerer may run elsewhere).
            self.host = host or os.environ.get("ML_LOCAL_SERVE_HOST", "127.0.0.1")
            self.port = port or self._state().get("port") or _free_port(self.host)
            self._url = f"http://{self.host}:{self.port}"
        else:
            if not admin_token:
                raise ValueError(f"endpoint {endpoint} at {url}: the connection needs the admin token as its password")
            self._url = url.rstrip("/")
        self._grpc_port = grpc_port
        self._admin_token = admin_token

    @classmethod
    def from_connection(cls, endpoint: str, conn_id: str | None, conn, settings: dict[str, Any]) -> LocalServerTarget:
        """Reached by URL when connection ``conn_id`` exists, else managed on this machine
        (settings: state_dir, host, port)."""
        from operators.connections import http_url

        if "canary_percent" in settings:
            raise ValueError("the local target serves one version at a time and has no canary: leave canary_percent "
                             "empty, or deploy to kubernetes, sagemaker or vertex")
        unknown = sorted(set(settings) - {"state_dir", "host", "port"})
        if unknown:
            raise ValueError(f"unknown local endpoint settings {unknown}: a local server takes state_dir, host "
                             f"and port (is the endpoint's connection missing its extra 'target'?)")
        if conn is not None:
            url = http_url(conn)
            if url is None:
                raise ValueError(f"connection {conn_id!r} has no host: set host (and port) of the ml.serve endpoint")
            grpc_port = conn.extra_dejson.get("grpc_port")
            return cls(endpoint, url=url, admin_token=conn.password, conn_id=conn_id,
                       grpc_port=int(grpc_port) if grpc_port else None, **settings)
        return cls(endpoint, conn_id=conn_id, **settings)

    # ------------------------------------------------------------------ state
    def _state(self) -> dict:
        try:
            return json.loads(self._state_path.read_text())
        except FileNotFoundError:
            return {}

    def _save(self, **changes) -> None:
        state = {**self._state(), **changes}
        tmp = self._state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2))
        os.replace(tmp, self._state_path)

    def _token(self) -> str:
        if self._admin_token:
            return self._admin_token
        path = self.dir / "admin-token"
        if not path.exists():
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_urlsafe(32))
        return path.read_text().strip()

    @property
    def url(self) -> str:
        return self._url

    def current(self) -> Served | None:
        """What /ping reports; for a managed server that is down, the last confirmed version
        (so a deploy that fails after a restart still knows what to roll back to)."""
        answer = ping(self.url)
        if answer and answer.get("model_version") and answer.get("source"):
            return Served(str(answer["model_version"]), answer["source"])
        served = self._state().get("served") if self.managed else None
        return Served(served["version"], served["uri"], live=False) if served else None

    @classmethod
    async def status(cls, handle: dict[str, Any]) -> DeployStatus:
        """Serving once /ping reports the asked version and source (the URL is in the handle)."""
        import asyncio

        answer = await asyncio.to_thread(ping, handle["url"]) or {}
        reported = answer.get("model_version")
        if reported == handle["version"] and answer.get("source") == handle["uri"]:
            return DeployStatus("serving", version=reported)
        return DeployStatus("progressing", f"{handle['url']} reports {reported}", version=reported)

    def invoke(self, rows: list) -> dict[str, Any]:
        return invoke(self.url, rows)

    def infer(self, request, protocol: str) -> dict[str, Any]:
        from operators.deploy import open_inference_client as oip

        if protocol == "v2":
            return oip.infer_rest(self.url, request)
        return oip.infer_grpc(self.grpc_address(), request)

    def grpc_address(self) -> str:
        """host:port of the endpoint's gRPC: a managed server's own port, else the connection's
        extra ``grpc_port`` on the URL's host."""
        from urllib.parse import urlsplit

        port = self._state().get("grpc_port") if self.managed else self._grpc_port
        if not port:
            raise EndpointError(f"{self.url} has no gRPC port: " + (
                "the server was started before it served gRPC; stop it (make demo-stop) and deploy again"
                if self.managed else f"set the extra grpc_port on connection {self.conn_id!r}"))
        host = urlsplit(self.url).hostname
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    def rollback(self, previous: Served) -> dict[str, Any]:
        return self._put(previous.uri, previous.version, previous.name)

    def confirm(self, served: Served, **facts) -> None:
        self._save(served={"version": served.version, "uri": served.uri, **facts}, url=self.url)

    # ------------------------------------------------------------------ actions
    def deploy(self, served: Served) -> dict[str, Any]:
        facts = self._put(served.uri, served.version, served.name)
        return self.handle(url=self.url, version=served.version, uri=served.uri, facts=facts)

    def _put(self, uri: str, version: str, name: str = "") -> dict[str, Any]:
        if not self.managed or ping(self.url) is not None:
            return self._swap(uri, version, name)
        self.stop()  # a managed process that no longer answers is replaced, not left holding the port
        return self._start(uri, version, name)

    def _swap(self, uri: str, version: str, name: str = "") -> dict:
        try:
            answer = swap(self.url, self._token(), uri, version, name=name)
        except EndpointError as exc:
            if exc.status is None:
                raise  # unreachable: not a refusal, and nothing is known about what serves
            raise DeployRefusedError(f"{self.url} refused version {version}: {exc}") from None
        return {"action": "hot-swap", "url": self.url, **answer}

    def _start(self, uri: str, version: str, name: str = "") -> dict:
        log = open(self.dir / "server.log", "ab")
        # only the basics and the artifact store's settings; hot swaps load only models under the
        # pipelines' artifact root (and any roots the worker adds)
        roots = ",".join(r for r in (artifact_root(), os.environ.get("ML_SERVE_ARTIFACT_ROOTS")) if r)
        env = child_environment(ML_SERVE_ADMIN_TOKEN=self._token(), ML_SERVE_ARTIFACT_ROOTS=roots)
        if float(env.get("ML_SERVE_CAPTURE_RATE") or 0) > 0:  # where <name>__monitor reads by default
            env.setdefault("ML_SERVE_CAPTURE_URI", artifact_root() + "/captures")
        grpc_port = self._state().get("grpc_port") or _free_port(self.host)
        proc = subprocess.Popen(
            [sys.executable, "-m", "ml.serve", "--model", uri, "--model-version", version,
             "--host", self.host, "--port", str(self.port), "--grpc-port", str(grpc_port),
             *(["--name", name] if name else [])],
            stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,  # outlives the task
        )
        self._save(pid=proc.pid, port=self.port, url=self.url, grpc_port=grpc_port)
        return {"action": "started", "url": self.url, "pid": proc.pid, "log": str(self.dir / "server.log")}

    def stop(self) -> None:
        """Stop a managed server (``make demo-stop``); a server reached by URL is not ours to stop."""
        pid = self._state().get("pid")
        if self.managed and pid and _pid_alive(pid):
            os.kill(pid, signal.SIGTERM)
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
        self._save(pid=None)
