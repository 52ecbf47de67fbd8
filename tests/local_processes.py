"""Helpers for tests that start processes (launchers, local servers on
127.0.0.1); not a test module."""

import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]


def run_launcher(name, args, cwd=REPO, env=None):
    """`python -m launchers.NAME *args` to completion (5 min at most), output
    captured; `env` entries are added to the environment."""
    return subprocess.run(
        [sys.executable, "-m", f"launchers.{name}", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, **(env or {})},
    )


def free_ports(n):
    """`n` distinct free TCP ports on 127.0.0.1."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def wait_all(procs, timeout):
    """Waits for `procs` (started with `start_new_session=True`) within one
    `timeout` in all; kills every process group still running, also when
    waiting raises. Returns the exit codes."""
    deadline = time.monotonic() + timeout
    try:
        for p in procs:
            p.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
    return [p.returncode for p in procs]
