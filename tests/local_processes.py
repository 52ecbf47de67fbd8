"""Helpers for tests that start processes on 127.0.0.1 (not a test module)."""

import os
import signal
import socket
import time


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
