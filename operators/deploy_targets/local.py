"""The local target: an ml.serve process on this machine, started if absent, hot-swapped otherwise.

State lives in ``<state_dir>/<endpoint>/``: ``state.json`` (port, pid, the confirmed
version), ``admin-token`` (mode 0600, handed to the server through its environment) and
``server.log``.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

from operators.deploy_targets.base import DeployRefusedError, DeployTarget, Served
from operators.endpoint_trigger import pid_alive, ping


def default_state_dir() -> Path:
    return Path(os.environ.get("ML_ENDPOINTS_DIR") or Path(os.environ.get("AIRFLOW_HOME", "/tmp")) / "ml-endpoints")


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class LocalServerTarget(DeployTarget):
    def __init__(self, endpoint: str, state_dir: str | None = None, host: str = "127.0.0.1", port: int | None = None):
        self.endpoint = endpoint
        self.host = host
        self.dir = Path(state_dir) if state_dir else default_state_dir() / endpoint
        self.dir.mkdir(parents=True, exist_ok=True)
        self._state_path = self.dir / "state.json"
        state = self._state()
        self.port = port or state.get("port") or _free_port(host)

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
        path = self.dir / "admin-token"
        if not path.exists():
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_urlsafe(32))
        return path.read_text().strip()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def current(self) -> Served | None:
        served = self._state().get("served")
        return Served(served["version"], served["uri"]) if served else None

    def confirm(self, served: Served, **facts) -> None:
        self._save(served={"version": served.version, "uri": served.uri, **facts})

    def process_alive(self) -> bool | None:
        pid = self._state().get("pid")
        if not pid or not pid_alive(pid):
            return False
        try:  # a zombie child of this process counts as dead
            return os.waitpid(pid, os.WNOHANG) == (0, 0)
        except ChildProcessError:
            return True

    # ------------------------------------------------------------------ actions
    def deploy(self, uri: str, version: str) -> dict:
        if self.process_alive() and ping(self.url) is not None:  # ping: a 200 answer, else None
            return self._swap(uri, version)
        return self._start(uri, version)

    def _swap(self, uri: str, version: str) -> dict:
        request = urllib.request.Request(
            self.url + "/admin/model", data=json.dumps({"uri": uri, "version": version}).encode(), method="POST",
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {self._token()}"},
        )
        try:
            with urllib.request.urlopen(request, timeout=120) as resp:
                answer = json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")
            try:
                detail = json.loads(detail).get("error", detail)
            except ValueError:
                pass
            raise DeployRefusedError(f"{self.url} refused version {version}: {detail}") from None
        return {"action": "hot-swap", "url": self.url, **answer}

    def _start(self, uri: str, version: str) -> dict:
        log = open(self.dir / "server.log", "ab")
        env = {**os.environ, "ML_SERVE_ADMIN_TOKEN": self._token()}
        project_root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = os.pathsep.join(p for p in (project_root, env.get("PYTHONPATH")) if p)
        proc = subprocess.Popen(
            [sys.executable, "-m", "ml.serve", "--model", uri, "--model-version", version,
             "--host", self.host, "--port", str(self.port)],
            stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,  # outlives the task
        )
        self._save(pid=proc.pid, port=self.port, url=self.url)
        return {"action": "started", "url": self.url, "pid": proc.pid, "log": str(self.dir / "server.log")}

    def stop(self) -> None:
        pid = self._state().get("pid")
        if pid and self.process_alive():
            os.kill(pid, signal.SIGTERM)
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
        self._save(pid=None, served=None)
