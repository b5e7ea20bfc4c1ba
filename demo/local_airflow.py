"""A real local Airflow: api-server (UI + REST API), scheduler, dag-processor and triggerer as
separate processes with the LocalExecutor, on the demo's embedded defaults (or any metadata
database), everything under one folder.

    python -m demo.local_airflow start [--dir .demo] [--port 8080]   # `make airflow`
    python -m demo.local_airflow stop  [--dir .demo]                 # `make airflow-stop`

``stop`` ends exactly the process groups ``start`` recorded in ``<dir>/airflow/pids/``; a model
server the pipeline started (its own session) keeps serving (``make demo-stop`` ends it).
The integration tests and ``benchmarks/pipeline.py`` drive the same class.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from demo.environment import REPO, demo_environment

COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")
USER = "admin"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _secret_file(path: Path, nbytes: int = 24) -> str:
    """A secret kept in a 0600 file, made once; never put on a command line or in a log."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(nbytes))
    return path.read_text().strip()


class AirflowApiError(RuntimeError):
    pass


class AirflowRest:
    """A small client for Airflow 3's REST API (token from /auth/token), for tests and benchmarks."""

    def __init__(self, url: str, user: str = USER, password: str | None = None):
        self.url = url.rstrip("/")
        self.user = user
        self._password = password
        self._token: str | None = None

    @property
    def password(self) -> str:
        return self._password

    def token(self) -> str:
        if self._token is None:
            answer = self._request("POST", "/auth/token", {"username": self.user, "password": self.password}, auth=False)
            self._token = answer["access_token"]
        return self._token

    def _request(self, method: str, path: str, body: Any = None, auth: bool = True) -> Any:
        headers = {"Content-Type": "application/json"}
        if auth:
            headers["Authorization"] = f"Bearer {self.token()}"
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=30) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as exc:
            raise AirflowApiError(f"{method} {path}: {exc.code} {exc.read()[:500]!r}") from None
        return json.loads(raw) if raw else None

    def api(self, method: str, path: str, body: Any = None) -> Any:
        return self._request(method, path, body)

    def trigger(self, dag_id: str, conf: dict | None = None, logical_date: str | None = None) -> str:
        """POST /api/v2/dags/{dag_id}/dagRuns; returns the run id."""
        run = self.api("POST", f"/api/v2/dags/{dag_id}/dagRuns", {"logical_date": logical_date, "conf": conf or {}})
        return run["dag_run_id"]

    def run_state(self, dag_id: str, run_id: str) -> str:
        return self.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{urllib.parse.quote(run_id, safe='')}")["state"]

    def task_instances(self, dag_id: str, run_id: str) -> dict[str, dict]:
        answer = self.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{urllib.parse.quote(run_id, safe='')}/taskInstances")
        return {ti["task_id"]: ti for ti in answer["task_instances"]}

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float = 300, poll: float = 1.0,
                     on_poll=None) -> str:
        """Poll until the run is success or failed; ``on_poll(task_instances)`` sees every poll."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if on_poll is not None:
                on_poll(self.task_instances(dag_id, run_id))
            state = self.run_state(dag_id, run_id)
            if state in ("success", "failed"):
                return state
            time.sleep(poll)
        raise TimeoutError(f"{dag_id} run {run_id} not finished after {timeout:.0f}s: "
                           f"{ {t: ti['state'] for t, ti in self.task_instances(dag_id, run_id).items()} }")

    def task_log(self, dag_id: str, run_id: str, task_id: str, try_number: int = 1) -> str:
        path = (f"/api/v2/dags/{dag_id}/dagRuns/{urllib.parse.quote(run_id, safe='')}/taskInstances/{task_id}"
                f"/logs/{try_number}?full_content=true")
        answer = self.api("GET", path)
        content = answer.get("content", answer) if isinstance(answer, dict) else answer
        if isinstance(content, list):
            return "\n".join(e.get("event", "") if isinstance(e, dict) else str(e) for e in content)
        return str(content)




class LocalAirflow(AirflowRest):
    """The four Airflow components as processes, and the REST client for the API they serve."""

    def __init__(self, demo_dir: str | os.PathLike, port: int = 8080, metadata_uri: str | None = None,
                 extra_env: dict[str, str] | None = None, airflow_bin: str | None = None):
        super().__init__(f"http://127.0.0.1:{port}")
        self.demo = Path(demo_dir).resolve()
        self.home = self.demo / "airflow"
        self.port = port
        self.pids_dir = self.home / "pids"
        self.logs_dir = self.home / "component-logs"
        self.airflow = airflow_bin or str(Path(sys.executable).parent / "airflow")
        passwords = self.home / "passwords.json"
        jwt_secret = self.home / "jwt-secret"
        self.env = {
            **os.environ,
            **demo_environment(self.demo, metadata_uri),
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": "4",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__API__PORT": str(port),
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__BASE_URL": self.url,
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.url}/execution/",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{USER}:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
            # Every component signs and checks the same tokens; the secret stays in its file.
            "AIRFLOW__API_AUTH__JWT_SECRET_CMD": f"cat {jwt_secret}",
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port() if port != 8080 else 8793),
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port() if port != 8080 else 8794),
            "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
            **(extra_env or {}),
        }
        self.env.pop("AIRFLOW__API_AUTH__JWT_SECRET", None)
        self._passwords, self._jwt_secret = passwords, jwt_secret

    # ------------------------------------------------------------------ processes
    @property
    def password(self) -> str:
        return json.loads(self._passwords.read_text())[USER]

    def prepare(self) -> None:
        """Metadata database migrated, secrets and the admin's password in place."""
        self.home.mkdir(parents=True, exist_ok=True)
        _secret_file(self._jwt_secret, 48)
        if not self._passwords.exists():
            fd = os.open(self._passwords, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                json.dump({USER: secrets.token_urlsafe(12)}, f)
        log = self.home / "db-migrate.log"
        with open(log, "wb") as out:
            code = subprocess.run([self.airflow, "db", "migrate"], env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                  timeout=600).returncode
        if code != 0:
            raise RuntimeError(f"airflow db migrate failed (exit {code}); see {log}")

    def running(self) -> dict[str, int]:
        alive = {}
        for component in COMPONENTS:
            pid_file = self.pids_dir / f"{component}.pid"
            if pid_file.exists():
                pid = int(pid_file.read_text())
                try:
                    os.kill(pid, 0)
                    alive[component] = pid
                except ProcessLookupError:
                    pass
        return alive

    def start(self, timeout: float = 180) -> None:
        if already := self.running():
            raise RuntimeError(f"Airflow already runs from {self.home} ({already}); stop it first: make airflow-stop")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", self.port)) == 0:
                raise RuntimeError(f"port {self.port} is taken; choose another with PORT=... (make airflow PORT=8081)")
        self.prepare()
        self.pids_dir.mkdir(parents=True, exist_ok=True)
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        for component in COMPONENTS:
            out = open(self.logs_dir / f"{component}.log", "ab")
            proc = subprocess.Popen([self.airflow, component], env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True, cwd=self.home)  # its own process group: stop ends all of it
            (self.pids_dir / f"{component}.pid").write_text(str(proc.pid))
        try:
            self.wait_until_ready(timeout)
        except BaseException:
            self.stop()
            raise

    def wait_until_ready(self, timeout: float) -> None:
        """The API answers, the scheduler and triggerer are healthy, and both DAGs are parsed."""
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            dead = [c for c in COMPONENTS if c not in self.running()]
            if dead:
                raise RuntimeError(f"{dead} exited at start; see {self.logs_dir}/{dead[0]}.log")
            try:
                health = self.api("GET", "/api/v2/monitor/health")
                dags = {d["dag_id"] for d in self.api("GET", "/api/v2/dags")["dags"]}
                last = (health, dags)
                if (health["scheduler"]["status"] == "healthy" and health["triggerer"]["status"] == "healthy"
                        and {"ml_training_pipeline", "ml_deploy"} <= dags):
                    return
            except (OSError, AirflowApiError, KeyError) as exc:
                last = exc
            time.sleep(1)
        raise RuntimeError(f"Airflow not ready after {timeout:.0f}s (last: {last}); logs in {self.logs_dir}")

    def stop(self, timeout: float = 30) -> list[str]:
        """SIGTERM each recorded process group, SIGKILL what is left after ``timeout``."""
        stopped = []
        for component in COMPONENTS:
            pid_file = self.pids_dir / f"{component}.pid"
            if not pid_file.exists():
                continue
            pid = int(pid_file.read_text())
            try:
                os.killpg(pid, signal.SIGTERM)
                stopped.append(component)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + timeout
        for component in stopped:
            pid = int((self.pids_dir / f"{component}.pid").read_text())
            while time.monotonic() < deadline and _group_alive(pid):
                time.sleep(0.2)
            if _group_alive(pid):
                os.killpg(pid, signal.SIGKILL)
        for component in COMPONENTS:
            (self.pids_dir / f"{component}.pid").unlink(missing_ok=True)
        return stopped



def _group_alive(pgid: int) -> bool:
    """Whether any process of the group lives. The group's leader, when this process started it,
    is reaped first: an exited child stays a zombie, still in its group, until its parent waits
    for it (so every stop used to wait out its whole timeout, 30 s, then SIGKILL nothing)."""
    try:
        os.waitpid(pgid, os.WNOHANG)
    except ChildProcessError:  # not our child (started by `make airflow` in another process), or reaped
        pass
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["start", "stop"])
    parser.add_argument("--dir", default=str(REPO / ".demo"), help="the demo folder (default: .demo)")
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8080")))
    args = parser.parse_args()
    local = LocalAirflow(args.dir, port=args.port)
    if args.action == "stop":
        stopped = local.stop()
        print(f"stopped {', '.join(stopped)}" if stopped else f"no Airflow was running from {local.home}")
        return 0
    from demo.seed_source import seed_sqlite

    local.demo.mkdir(parents=True, exist_ok=True)
    print(seed_sqlite(local.demo / "source.db", days_at_least=2))
    print("==> starting api-server, scheduler, dag-processor and triggerer (LocalExecutor); logs in "
          f"{local.logs_dir}")
    local.start()
    print(f"""
Airflow is running: {local.url}
  user: {USER}
  password: {local.password}   (kept in {local._passwords})
In the UI: DAGs -> ml_training_pipeline -> Trigger (the Params form), then watch the Graph.
REST: TOKEN=$(curl -s -X POST {local.url}/auth/token -H 'Content-Type: application/json' \\
        -d '{{"username": "{USER}", "password": "<password>"}}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
      curl -X POST {local.url}/api/v2/dags/ml_training_pipeline/dagRuns -H "Authorization: Bearer $TOKEN" \\
        -H 'Content-Type: application/json' -d '{{"logical_date": null, "conf": {{"estimator": "LogisticRegression", "hyperparameters": {{"max_iter": 500}}}}}}'
CLI:  export AIRFLOW_HOME={local.home}   (and the settings in demo/environment.py)
Stop: make airflow-stop""")
    return 0


if __name__ == "__main__":
    sys.exit(main())
