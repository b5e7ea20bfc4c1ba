"""Stopping what the launchers started: a child that exited is reaped, so a stop returns when the
process is gone instead of waiting out its timeout on a zombie (every Airflow stack's teardown
took 30 s more than it needed, and the test dockerd's too)."""

from __future__ import annotations

import os
import signal
import subprocess
import time


def test_a_stopped_child_process_is_gone_at_once_not_after_the_timeout():
    from demo.container_engine import _stop_pid

    child = subprocess.Popen(["sleep", "300"])
    started = time.monotonic()
    _stop_pid(child.pid, timeout=20)
    assert time.monotonic() - started < 10
    assert child.poll() is not None or not os.path.exists(f"/proc/{child.pid}")


def test_an_exited_process_group_leader_started_here_counts_as_gone():
    from demo.local_airflow import _group_alive

    leader = subprocess.Popen(["sleep", "300"], start_new_session=True)
    assert _group_alive(leader.pid)
    os.killpg(leader.pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while _group_alive(leader.pid):
        assert time.monotonic() < deadline, "the exited leader was still counted (a zombie)"
        time.sleep(0.1)
