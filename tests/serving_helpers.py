"""Start real `python -m ml.serve` processes for tests, and small HTTP helpers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from tests.conftest import free_port

REPO = Path(__file__).resolve().parent.parent


class ServerProcess:
    def __init__(self, *args: str, env: dict | None = None, ready: str = "/ping"):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(f"/tmp/ml-serve-test-{self.port}.log", "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ml.serve", "--port", str(self.port), *args],
            cwd=REPO, stdout=self.log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})},
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}: {Path(self.log.name).read_text()[-2000:]}")
            try:
                if request(self.url + ready)[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"server did not answer {ready} within 60 s")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=20)
        self.log.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def request(url: str, body: bytes | None = None, content_type: str = "application/json",
            headers: dict | None = None, method: str | None = None, timeout: float = 10) -> tuple[int, dict | str]:
    req = urllib.request.Request(url, data=body, method=method or ("POST" if body is not None else "GET"),
                                 headers={"Content-Type": content_type, **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            status, raw = resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode()


def post_json(url: str, doc, **kwargs) -> tuple[int, dict | str]:
    return request(url, json.dumps(doc).encode(), **kwargs)


def in_process(scenario, **config):
    """``scenario(server)`` against a started ``ModelServer(ServeConfig(**config))`` (the ASGI app
    uvicorn runs, called in this process), its result returned; the server shut down after."""
    import asyncio

    from ml.serving.app import ModelServer, ServeConfig

    async def main():
        server = ModelServer(ServeConfig(**{"access_log": False, **config}))
        await server.startup()
        try:
            return await scenario(server)
        finally:
            await server.shutdown()
    return asyncio.run(main())


def metric_value(url: str, name: str) -> float:
    """The sum of a server's ``/metrics`` samples named ``name`` (or ``name_total``), unlabelled or labelled."""
    text = request(url + "/metrics")[1]
    return sum(float(line.split()[-1]) for line in text.splitlines()
               if line.split(" ")[0].split("{")[0] in (name, name + "_total"))
