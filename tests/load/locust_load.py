"""Locust, headless, in a process of its own: load for the SLO report and for the drills.

Its own process because Locust monkey-patches the standard library with gevent, which must
not happen inside pytest or the Airflow code the drills run beside it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

HERE = Path(__file__).resolve().parent
SLO_FILE = HERE / "slo.toml"


def load_settings(slo_file: Path = SLO_FILE) -> dict:
    return tomllib.loads(Path(slo_file).read_text())["load"]


class LocustLoad:
    """``start()`` the load against ``url``; ``stop()`` (SIGTERM, Locust's graceful shutdown) or
    ``wait()`` for its bounds; both return the report: requests, valid rate, p50/p95/p99,
    versions that answered, failures by reason, SLO breaches, and Locust's exit code."""

    def __init__(self, url: str, columns: list[str], rows: list[list], workdir: Path, *, users: int | None = None,
                 seconds: float | None = None, max_requests: int | None = None, slo_file: Path = SLO_FILE,
                 batch_rows: int | None = None, batch_share: float | None = None, think_ms: float = 0.0):
        settings = load_settings(slo_file)
        self.url, self.workdir = url, Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.payloads = self.workdir / "payloads.json"
        self.payloads.write_text(json.dumps({"columns": columns, "rows": rows}))
        self.report_path = self.workdir / "report.json"
        self.output = self.workdir / "locust.log"
        self.users = users or settings["users"]
        self.command = [
            sys.executable, "-m", "locust", "-f", str(HERE / "locustfile.py"), "--headless", "--only-summary",
            "--skip-log-setup", "--host", url, "-u", str(self.users), "-r", str(self.users),
            "--run-time", f"{int(seconds or settings['seconds'])}s", "--stop-timeout", "5",
            "--payloads", str(self.payloads), "--slo", str(slo_file), "--report", str(self.report_path),
            "--max-requests", str(settings["max_requests"] if max_requests is None else max_requests),
            "--batch-rows", str(batch_rows or settings["batch_rows"]),
            "--batch-share", str(settings["batch_share"] if batch_share is None else batch_share),
            "--think-ms", str(think_ms),
        ]
        self.proc: subprocess.Popen | None = None

    def start(self, wait_flowing: float = 30.0) -> LocustLoad:
        """Start, and (unless ``wait_flowing`` is 0) return once 50 requests were answered validly."""
        for stale in (self.report_path, Path(f"{self.report_path}.flowing")):
            stale.unlink(missing_ok=True)
        env = {**os.environ, "PYTHONPATH": str(HERE.parent.parent)}
        self.proc = subprocess.Popen(self.command, stdout=open(self.output, "wb"), stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + wait_flowing
        while wait_flowing and not Path(f"{self.report_path}.flowing").exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                try:
                    failures = self.stop(timeout=20)["failures"]
                except RuntimeError as exc:
                    failures = str(exc)
                raise RuntimeError(f"the load never flowed against {self.url} within {wait_flowing}s; "
                                   f"failures: {failures}\n{self.output.read_text()[-3000:]}")
            time.sleep(0.05)
        return self

    def stop(self, timeout: float = 30.0) -> dict:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.wait(timeout)

    def wait(self, timeout: float | None = None) -> dict:
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise RuntimeError(f"Locust did not stop within {timeout}s:\n{self.output.read_text()[-3000:]}") from None
        if not self.report_path.exists():
            raise RuntimeError(f"Locust exited with {code} and no report:\n{self.output.read_text()[-3000:]}")
        return {**json.loads(self.report_path.read_text()), "exit_code": code}

    def printed(self) -> str:
        return self.output.read_text()

    def __enter__(self) -> LocustLoad:
        return self.start()

    def __exit__(self, *exc) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
