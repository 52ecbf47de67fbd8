"""What the multi-worker stop coordination costs per step.

Under `--strategy=multi_worker` every worker all-reduces its signal flag after
each step (`training._largest_over_workers`), so that a SIGTERM to any one
worker stops all at the same step. This tool trains the same 2-worker run
(127.0.0.1, one TF thread per worker) with that all-reduce and with it
replaced by a constant 0 (no coordination: the pre-7052c69 behaviour),
alternating A/B `--repeats` times, and prints the chief's steps/s of each
interval after the first (compilation) and the ratio of the two medians
(over all repeats' intervals; the all-reduce variant runs first in each repeat).

    .venv/bin/python tools/multi_worker_signal_cost.py [--preset=mnist_recall]
        [--steps=400] [--log_every=100] [--repeats=2] [EXTRA train flags...]

Run it with nothing else running; it is a measurement, not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import socket
import statistics
import subprocess
import sys
import tempfile

REPO = pathlib.Path(__file__).resolve().parents[1]

DRIVER = r"""
import os, sys
from vma_tf import training
if os.environ["VMA_BENCH_COORDINATE"] == "0":
    training._largest_over_workers = lambda strategy: (lambda value: 0)
from absl import app
from launchers import train
sys.argv[0] = "launchers.train"
app.run(train.main)
"""


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _run(coordinate: bool, args, extra: list[str], root: pathlib.Path) -> list[float]:
    """One 2-worker run; returns the chief's steps/s per interval after the
    first."""
    workdir = root / f"run_{'on' if coordinate else 'off'}_{len(list(root.iterdir()))}"
    cluster = {"worker": [f"127.0.0.1:{p}" for p in _free_ports(2)]}
    flags = [
        f"--preset={args.preset}",
        f"--steps={args.steps}",
        f"--log_every={args.log_every}",
        f"--eval_every={args.steps}",
        f"--checkpoint_every={args.steps}",
        "--eval_batches=1",
        "--strategy=multi_worker",
        "--progress=false",
        f"--workdir={workdir}",
        *extra,
    ]
    procs = []
    for index in range(2):
        env = {
            **os.environ,
            "TF_CONFIG": json.dumps(
                {"cluster": cluster, "task": {"type": "worker", "index": index}}
            ),
            "TF_NUM_INTRAOP_THREADS": "1",
            "TF_NUM_INTEROP_THREADS": "1",
            "TF_CPP_MIN_LOG_LEVEL": "2",
            "VMA_BENCH_COORDINATE": "1" if coordinate else "0",
        }
        procs.append(
            subprocess.Popen(
                [sys.executable, "-c", DRIVER, *flags],
                cwd=REPO,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    outputs = [p.communicate()[0] for p in procs]
    if any(p.returncode for p in procs):
        sys.exit("a worker failed:\n" + "\n".join(o[-2000:] for o in outputs))
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").open()]
    rates = [r["steps_per_sec"] for r in rows if r["split"] == "train"]
    return rates[1:]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="mnist_recall")
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--log_every", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=2)
    args, extra = parser.parse_known_args(argv)
    if args.steps < 2 * args.log_every:
        parser.error("--steps must be at least 2 * --log_every")
    on, off = [], []
    with tempfile.TemporaryDirectory(prefix="vma_mw_bench_") as tmp:
        root = pathlib.Path(tmp)
        for repeat in range(args.repeats):
            for coordinate, rates in ((True, on), (False, off)):
                got = _run(coordinate, args, extra, root)
                rates.extend(got)
                name = "all-reduce" if coordinate else "none      "
                print(f"repeat {repeat} {name} steps/s: {[round(r, 2) for r in got]}")
                sys.stdout.flush()
    a, b = statistics.median(on), statistics.median(off)
    print(
        f"median steps/s: with the per-step all-reduce {a:.3f}, without {b:.3f}; "
        f"the all-reduce adds {(b / a - 1) * 100:+.1f} % time per step"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
