"""A real local Airflow: api-server (UI + REST API), scheduler, dag-processor and triggerer as
separate processes with the LocalExecutor, on the demo's embedded defaults (or any metadata
database), everything under one folder; or, with workers, the CeleryExecutor: N Celery workers
(distinct hostnames) on this machine's Redis, PostgreSQL for the metadata and Celery's results.

    python -m demo.local_airflow start [--dir .demo] [--port 8080]   # `make airflow`
    python -m demo.local_airflow start --workers 2                   # `make airflow WORKERS=2`
    python -m demo.local_airflow stop  [--dir .demo]                 # `make airflow-stop`

With N workers: ``worker-1`` .. ``worker-N`` take the default, scoring and deploy queues and
``trainer-1`` takes training (operators/workers.py), so a long training never holds the slots
a deploy or a sensor needs.

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
from operators.workers import queue

COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")
USER = "admin"
BROKER_URL = "redis://127.0.0.1:6379/0"
CELERY_METADATA = "postgresql+psycopg2://127.0.0.1:5432/ml_airflow"  # `make airflow WORKERS=N`'s default
GENERAL_QUEUES = ("default", "scoring", "deploy")


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
    """A small client for Airflow 3's REST API (token from /auth/token), for tests and benchmarks.

    ``timeout`` bounds each request; a GET that times out is asked again (``get_attempts`` in
    all): an api-server on a loaded machine may take longer than that to answer once.
    """

    def __init__(self, url: str, user: str = USER, password: str | None = None, timeout: float = 30,
                 get_attempts: int = 3):
        self.url = url.rstrip("/")
        self.user = user
        self._password = password
        self._token: str | None = None
        self.timeout, self.get_attempts = timeout, get_attempts

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
        attempts = self.get_attempts if method == "GET" else 1
        for attempt in range(1, attempts + 1):
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as resp:
                    raw = resp.read()
                break
            except urllib.error.HTTPError as exc:
                raise AirflowApiError(f"{method} {path}: {exc.code} {exc.read()[:500]!r}") from None
            except (TimeoutError, urllib.error.URLError) as exc:
                if not isinstance(getattr(exc, "reason", exc), TimeoutError):
                    raise
                if attempt == attempts:
                    raise TimeoutError(f"{method} {path}: no answer from {self.url} in {self.timeout:g} s "
                                       f"({attempts} attempt(s))") from None
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

    def failed_task_logs(self, dag_id: str, run_id: str, tail: int = 3000) -> dict[str, str]:
        """The end of each failed task's log in the run: what a test shows when a run failed."""
        return {t: self.task_log(dag_id, run_id, t, ti["try_number"])[-tail:]
                for t, ti in self.task_instances(dag_id, run_id).items() if ti["state"] == "failed"}

    def task_log(self, dag_id: str, run_id: str, task_id: str, try_number: int = 1, map_index: int = -1) -> str:
        path = (f"/api/v2/dags/{dag_id}/dagRuns/{urllib.parse.quote(run_id, safe='')}/taskInstances/{task_id}"
                f"/logs/{try_number}?full_content=true&map_index={map_index}")
        answer = self.api("GET", path)
        content = answer.get("content", answer) if isinstance(answer, dict) else answer
        if isinstance(content, list):
            return "\n".join(e.get("event", "") if isinstance(e, dict) else str(e) for e in content)
        return str(content)




class LocalAirflow(AirflowRest):
    """The four Airflow components as processes, and the REST client for the API they serve."""

    def __init__(self, demo_dir: str | os.PathLike, port: int = 8080, metadata_uri: str | None = None,
                 extra_env: dict[str, str] | None = None, airflow_bin: str | None = None, workers: int = 0,
                 training_workers: int = 1, worker_concurrency: int = 2, broker_url: str | None = None):
        """``workers`` > 0: the CeleryExecutor with that many general workers and
        ``training_workers`` training workers (concurrency 1 each: one training per worker)."""
        super().__init__(f"http://127.0.0.1:{port}")
        if workers and (metadata_uri or "sqlite").startswith("sqlite"):
            raise ValueError("the CeleryExecutor needs a metadata database its workers can share, not SQLite: give a "
                             f"PostgreSQL URI (make airflow WORKERS=N uses {CELERY_METADATA})")
        self.broker_url = broker_url or os.environ.get("ML_CELERY_BROKER_URL", BROKER_URL)
        self.workers = {f"worker-{i}": (GENERAL_QUEUES, worker_concurrency) for i in range(1, workers + 1)}
        if workers:
            self.workers.update({f"trainer-{i}": ((queue("training"),), 1) for i in range(1, training_workers + 1)})
        self.demo = Path(demo_dir).resolve()
        self.home = self.demo / "airflow"
        self.port = port
        self.pids_dir = self.home / "pids"
        self.logs_dir = self.home / "component-logs"
        self.airflow = airflow_bin or str(Path(sys.executable).parent / "airflow")
        passwords = self.home / "passwords.json"
        jwt_secret = self.home / "jwt-secret"
        slots = sum(c for _, c in self.workers.values())
        self.env = {
            **os.environ,
            **demo_environment(self.demo, metadata_uri),
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor" if workers else "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": str(max(4, slots)),
            **(celery_settings(self.broker_url, metadata_uri, worker_concurrency) if workers else {}),
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

    @property
    def components(self) -> tuple[str, ...]:
        return COMPONENTS + tuple(self.workers)

    def _recorded(self) -> list[str]:
        """Every component with a pid file: what ``start`` started, also from another process
        (``make airflow-stop`` does not know how many workers ``make airflow`` started)."""
        return [p.stem for p in sorted(self.pids_dir.glob("*.pid"))] if self.pids_dir.exists() else []

    def running(self) -> dict[str, int]:
        alive = {}
        for component in self._recorded():
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
        if self.workers:
            check_broker(self.broker_url)
        self.prepare()
        self.pids_dir.mkdir(parents=True, exist_ok=True)
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        for component in COMPONENTS:
            self._spawn(component, [self.airflow, component], self.env)
        for name in self.workers:
            self.start_worker(name)
        try:
            self.wait_until_ready(timeout)
        except BaseException:
            self.stop()
            raise

    def _spawn(self, component: str, argv: list[str], env: dict[str, str]) -> None:
        out = open(self.logs_dir / f"{component}.log", "ab")
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True, cwd=self.home)  # its own process group: stop ends all of it
        (self.pids_dir / f"{component}.pid").write_text(str(proc.pid))

    def start_worker(self, name: str) -> None:
        """One Celery worker (again, after ``kill_worker``): its own hostname (in task instances,
        logs and manifests), its queues. Logs are read from the shared log folder, so it serves
        none of its own."""
        queues, concurrency = self.workers[name]
        (self.logs_dir / f"{name}.log").unlink(missing_ok=True)  # readiness is read from this log
        self._spawn(name, [self.airflow, "celery", "worker", "--celery-hostname", f"{name}@%h", "--queues",
                           ",".join(queues), "--concurrency", str(concurrency), "--skip-serve-logs"],
                    {**self.env, "ML_WORKER_HOSTNAME": name,
                     "AIRFLOW__CORE__HOSTNAME_CALLABLE": "operators.workers.worker_hostname"})

    def kill_worker(self, name: str) -> int:
        """SIGKILL a worker's whole process group (the worker, its pool and the tasks it runs), as
        when its machine dies; returns the group's id."""
        pid = self.running()[name]
        os.killpg(pid, signal.SIGKILL)
        while _group_alive(pid):
            time.sleep(0.05)
        (self.pids_dir / f"{name}.pid").unlink(missing_ok=True)
        return pid

    def _workers_ready(self) -> list[str]:
        """The workers whose log says Celery's ``ready.`` (connected to the broker, consuming)."""
        return [w for w in self.workers if (log := self.logs_dir / f"{w}.log").exists()
                and b" ready." in log.read_bytes()]

    def wait_until_ready(self, timeout: float) -> None:
        """The API answers, the scheduler and triggerer are healthy, and both DAGs are parsed."""
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            dead = [c for c in self.components if c not in self.running()]
            if dead:
                raise RuntimeError(f"{dead} exited at start; see {self.logs_dir}/{dead[0]}.log")
            try:
                health = self.api("GET", "/api/v2/monitor/health")
                dags = {d["dag_id"] for d in self.api("GET", "/api/v2/dags")["dags"]}
                waiting = sorted(set(self.workers) - set(self._workers_ready()))
                last = (health, dags, f"workers not ready: {waiting}")
                if (health["scheduler"]["status"] == "healthy" and health["triggerer"]["status"] == "healthy"
                        and {"ml_training_pipeline", "ml_deploy"} <= dags and not waiting):
                    return
            except (OSError, AirflowApiError, KeyError) as exc:
                last = exc
            time.sleep(1)
        raise RuntimeError(f"Airflow not ready after {timeout:.0f}s (last: {last}); logs in {self.logs_dir}")

    def stop(self, timeout: float = 30) -> list[str]:
        """SIGTERM each recorded process group, SIGKILL what is left after ``timeout``."""
        stopped = []
        recorded = self._recorded()
        for component in recorded:
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
        for component in recorded:
            (self.pids_dir / f"{component}.pid").unlink(missing_ok=True)
        return stopped



def create_database(uri: str) -> None:
    """The PostgreSQL database of ``uri``, created when missing (`make airflow WORKERS=N`)."""
    import psycopg2

    parts = urllib.parse.urlsplit(uri.replace("+psycopg2", "", 1))
    name = parts.path.lstrip("/")
    server = urllib.parse.urlunsplit(parts._replace(path="/postgres"))
    try:
        conn = psycopg2.connect(server)
    except psycopg2.OperationalError as exc:
        raise SystemExit(f"the CeleryExecutor's metadata needs PostgreSQL at {parts.hostname}:{parts.port} ({exc}); "
                         "start it, or give AIRFLOW_DB=postgresql+psycopg2://user@host/db") from None
    conn.autocommit = True  # CREATE DATABASE runs outside a transaction (so no `with conn:`, which opens one)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            if cur.fetchone() is None:
                cur.execute(f'CREATE DATABASE "{name}"')
    finally:
        conn.close()


def celery_settings(broker_url: str, metadata_uri: str, concurrency: int) -> dict[str, str]:
    """The CeleryExecutor's settings: the broker, Celery's results in the metadata database."""
    return {
        "AIRFLOW__CELERY__BROKER_URL": broker_url,
        "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + metadata_uri,  # SQLAlchemy's URL after Celery's db+
        "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(concurrency),
        # a task still running after this long is redelivered (and the first one ended): a day, said
        # explicitly, is longer than any training's execution_timeout by default
        "AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__VISIBILITY_TIMEOUT": "86400",
    }


def check_broker(url: str, timeout: float = 3) -> None:
    """Redis answers PING at ``url``, or an error that says how to get one."""
    parts = urllib.parse.urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 6379), timeout=timeout) as s:
            s.sendall(b"PING\r\n")
            answer = s.recv(64)
    except OSError as exc:
        raise RuntimeError(f"no Redis at {parts.hostname}:{parts.port or 6379} for the Celery broker ({exc}): start "
                           "one (apt-get install redis-server) or set ML_CELERY_BROKER_URL") from None
    if not answer.startswith((b"+PONG", b"-NOAUTH")):
        raise RuntimeError(f"{parts.hostname}:{parts.port} did not answer PING as Redis does: {answer[:40]!r}")


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
    parser.add_argument("--workers", type=int, default=int(os.environ.get("WORKERS") or 0),
                        help="Celery workers on this machine's Redis (0: the LocalExecutor)")
    parser.add_argument("--metadata", default=os.environ.get("AIRFLOW_DB") or None,
                        help=f"metadata database URI (default: SQLite; with workers {CELERY_METADATA})")
    args = parser.parse_args()
    metadata = args.metadata
    if args.action == "start" and args.workers and not metadata:
        metadata = CELERY_METADATA
        create_database(metadata)
    local = LocalAirflow(args.dir, port=args.port, metadata_uri=metadata, workers=args.workers)
    if args.action == "stop":
        stopped = local.stop()
        print(f"stopped {', '.join(stopped)}" if stopped else f"no Airflow was running from {local.home}")
        return 0
    from demo.seed_source import seed_sqlite

    local.demo.mkdir(parents=True, exist_ok=True)
    print(seed_sqlite(local.demo / "source.db", days_at_least=2))
    executor = (f"CeleryExecutor, workers {', '.join(local.workers)} on {local.broker_url}" if local.workers
                else "LocalExecutor")
    print(f"==> starting api-server, scheduler, dag-processor and triggerer ({executor}); logs in {local.logs_dir}")
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
