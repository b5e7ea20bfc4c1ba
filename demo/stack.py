"""The compose stack (docker-compose.yaml) from this repository's images: `make stack`.

    python -m demo.stack up      # build the images, start the stack, print URLs and credentials
                                 # (WORKERS=N: N replicas of airflow-worker; default 1)
    python -m demo.stack down    # stop it (volumes kept), and a private dockerd if one was started

Secrets (admin password, JWT secret, the model server's admin token) are made once and kept
in 0600 files under .demo/stack/; compose reads them from the environment. Where the official
PostgreSQL and Redis images cannot be pulled, the test-only override builds them from the Debian base.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

from demo.container_engine import CACHE, Engine, EngineUnavailable, engine, ensure_base_image
from demo.environment import REPO

LOCAL_POSTGRES = REPO / "tests/containers/compose.local.yaml"


class Stack:
    def __init__(self, eng: Engine, project: str = "mlstack", env: dict[str, str] | None = None):
        self.engine, self.project = eng, project
        compose = shutil.which("docker-compose")
        self.base = [compose] if compose else ["docker", "compose"]
        self.env = {**eng.env, **(env or {})}
        self.files = [REPO / "docker-compose.yaml"]

    @property
    def cmd(self) -> list[str]:
        return [*self.base, "-p", self.project, *[a for f in self.files for a in ("-f", str(f))]]

    def compose(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
        return subprocess.run([*self.cmd, *args], env=self.env, capture_output=True, text=True, cwd=REPO,
                              timeout=timeout)

    def build(self) -> None:
        """The project's images; PostgreSQL from the Debian base when no registry gives it."""
        if subprocess.run([*self.base, "version"], capture_output=True, env=self.env).returncode != 0:
            raise EngineUnavailable("neither docker-compose nor the docker compose plugin works: "
                                    "`apt-get install docker-compose` (or `make container-tools`)")
        ensure_base_image(self.engine)
        self.engine.build("docker/airflow/Dockerfile", "ml-airflow:0.1.0")
        self.engine.build("docker/serving/Dockerfile", "ml-serving:0.1.0")
        if not all(self.engine.has_image(i) for i in ("postgres:15-bookworm", "redis:7.2-bookworm")) and any(
                self.engine.docker("pull", i, check=False, timeout=300).returncode != 0
                for i in ("postgres:15-bookworm", "redis:7.2-bookworm")):
            self.engine.build("tests/containers/postgres/Dockerfile", "ml-test-postgres:15")
            self.engine.build("tests/containers/redis/Dockerfile", "ml-test-redis:7")
            self.files.append(LOCAL_POSTGRES)

    def up(self, workers: int = 1) -> None:
        """``workers``: replicas of ``airflow-worker`` (``--scale airflow-worker=N``)."""
        proc = self.compose("up", "-d", "--no-build", "--scale", f"airflow-worker={workers}")
        if proc.returncode != 0:
            raise RuntimeError(f"compose up failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")

    def down(self, volumes: bool = False) -> None:
        self.compose("down", *(["-v"] if volumes else []), timeout=300)

    def logs(self, tail: int = 40) -> str:
        return self.compose("logs", "--tail", str(tail)).stdout


def _secret(name: str) -> str:
    from demo.local_airflow import _secret_file

    return _secret_file(REPO / ".demo" / "stack" / name)


def main() -> int:
    action = sys.argv[1] if len(sys.argv) > 1 else "up"
    env = {"AIRFLOW_ADMIN_PASSWORD": _secret("admin-password"), "AIRFLOW_JWT_SECRET": _secret("jwt-secret"),
           "AIRFLOW_SECRET_KEY": _secret("secret-key"), "ML_SERVE_ADMIN_TOKEN": _secret("serving-admin-token")}
    try:
        eng = engine(start=action == "up")
    except EngineUnavailable as exc:
        if action == "down":
            print("no container engine is running; nothing to stop")
            return 0
        print(f"error: {exc}", file=sys.stderr)
        return 2
    stack = Stack(eng, env=env)
    if action == "down":
        if (CACHE / "compose.local").exists():
            stack.files.append(LOCAL_POSTGRES)
        stack.down()
        subprocess.run([sys.executable, "-m", "demo.container_engine", "stop"], cwd=REPO)
        return 0
    print("==> building images (first time: a few minutes)")
    stack.build()
    marker = CACHE / "compose.local"  # so `down` names the same files as `up`
    if LOCAL_POSTGRES in stack.files:
        marker.write_text("1")
    else:
        marker.unlink(missing_ok=True)
    workers = max(1, int(os.environ.get("WORKERS") or 1))
    print(f"==> starting the stack ({workers} airflow-worker replica(s) and a training worker)")
    stack.up(workers=workers)
    port = os.environ.get("ML_STACK_API_PORT", "8080")
    if not wait_healthy(f"http://127.0.0.1:{port}/api/v2/monitor/health", 240):
        print(stack.logs()[-5000:])
        print("error: the api-server did not become healthy in 240 s (logs above)", file=sys.stderr)
        return 1
    print(f"""
The stack is up (project {stack.project}, engine {eng.docker_host}):
  Airflow UI + REST API: http://127.0.0.1:{port}   user admin, password in .demo/stack/admin-password
  MLflow:                http://127.0.0.1:{os.environ.get("ML_STACK_MLFLOW_PORT", "5000")}
  model server:          http://127.0.0.1:{os.environ.get("ML_STACK_SERVING_PORT", "8081")}  (/ping 503 until a deploy)
  its gRPC (Open Inference Protocol): 127.0.0.1:{os.environ.get("ML_STACK_SERVING_GRPC_PORT", "8082")}
Unpause and trigger ml_training_pipeline in the UI; `make stack-stop` stops it all.""")
    return 0


def wait_healthy(url: str, timeout: float) -> bool:
    import json
    import time
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=3) as resp:
                health = json.loads(resp.read())
                if all(health.get(k, {}).get("status") == "healthy" for k in ("scheduler", "triggerer")):
                    return True
        except (OSError, ValueError):
            pass
        time.sleep(2)
    return False


if __name__ == "__main__":
    sys.exit(main())
