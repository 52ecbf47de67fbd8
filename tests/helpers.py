"""Helpers shared by the test modules (not a test module): tiny configs,
checkpoint and metrics readers, and processes started by tests (launchers,
local servers on 127.0.0.1). Test modules import from here, never from each
other."""

import contextlib
import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

import tensorflow as tf

from vma_tf import configs

REPO = pathlib.Path(__file__).resolve().parents[1]


def tiny(preset="mnist_recall", **overrides):
    """`preset` shrunk to a run of 40 steps that takes seconds: logs every 10,
    evaluates and checkpoints every 20, |M| = B = 8 (episodes of 2 x 2), no
    extra test-time memory (`mnist_recall`'s 2048: pass `eval_memory_size=32`
    to a test of the extra `*_m32` splits)."""
    base = dict(
        steps=40, log_every=10, eval_every=20, checkpoint_every=20, eval_batches=2
    )
    if preset.startswith("omniglot"):
        base["channels"] = 4
    if configs.get_preset(preset).data.task == "episodes":
        base.update(batch_classes=2, targets_per_class=2, memory_per_class=2)
    else:
        base.update(memory_size=8, batch_size=8)
    if preset == "mnist_recall":
        base["eval_memory_size"] = 0
    base.update(overrides)
    return configs.override(configs.get_preset(preset), **base)


def checkpoint_values(workdir):
    """`name -> value` of the model variables in the newest checkpoint."""
    path = tf.train.latest_checkpoint(str(pathlib.Path(workdir) / "checkpoints"))
    return {
        n: tf.train.load_variable(path, n)
        for n, _ in tf.train.list_variables(path)
        if n.startswith("model/")
    }


def all_checkpoint_values(path):
    """`name -> value` of every variable of the checkpoint `path`."""
    return {
        n: tf.train.load_variable(path, n) for n, _ in tf.train.list_variables(path)
    }


def read_metrics(workdir):
    """The rows of `workdir/metrics.jsonl`."""
    text = (pathlib.Path(workdir) / "metrics.jsonl").read_text()
    return [json.loads(line) for line in text.splitlines()]


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
    """`n` distinct free TCP ports on 127.0.0.1, released at once (another
    process may take one before the caller binds it; `reserved_ports` holds
    them)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


@contextlib.contextmanager
def reserved_ports(n):
    """`n` distinct free TCP ports on 127.0.0.1, held until the block ends.

    Each port stays bound here (SO_REUSEADDR and SO_REUSEPORT, never
    listening), so no other process can take it between its choice and the
    children binding it. gRPC servers (TF's collectives, keras-tuner's
    oracle) set SO_REUSEPORT themselves and bind the same port alongside; a
    socket that does not listen receives no connections.
    """
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        yield [s.getsockname()[1] for s in socks]
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


def load_tool(name):
    """The module `tools/NAME.py` (tools are scripts, not a package), registered
    in `sys.modules` under `name` (its dataclasses need that)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, REPO / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(name, module)
    spec.loader.exec_module(module)
    return module


def check_encoder_context_init(model, x, memory, m_kernel, zeros: bool):
    """q(z|x, m_a) of a built VMA at initialisation: with a zero m_a-half
    (`encoder_context_init="zeros"`) its parameters are the same for every
    entry, else they differ; either way the loss has a non-zero gradient for
    the m_a-half `m_kernel` (the encoder learns to use m_a)."""
    import numpy as np

    state = model.memory_state(memory)
    batch = x.shape[0]
    q_params = [
        model.encoder(
            x,
            tf.nest.map_structure(
                lambda t: tf.gather(t, tf.fill([batch], slot)), state["encoder"]
            ),
        ).numpy()
        for slot in (0, 1)
    ]
    gap = np.abs(q_params[0] - q_params[1]).max()
    assert (gap == 0.0) if zeros else (gap > 1e-4), gap
    assert (np.abs(m_kernel.numpy()).max() == 0.0) == zeros
    with tf.GradientTape() as tape:
        loss, _ = model.loss_and_terms(x, memory, seed=tf.constant([3, 4]))
    grad = tape.gradient(loss, m_kernel)
    assert grad is not None and np.abs(grad.numpy()).max() > 0.0
