r"""Evaluate a trained run: `python -m launchers.evaluate --workdir=DIR --protocol=nll`.

Writes `OUT/<protocol>.json` (default OUT = DIR/eval) with every number as mean
and standard error. Example:

  python -m launchers.evaluate --workdir=~/vma_runs/recall16 --protocol=nll \
      --num_samples=1000 --num_examples=640
"""

from __future__ import annotations

import json
import os
import pathlib

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # Before TF is imported.

from absl import app, flags  # noqa: E402

from launchers.common import check_common, fail  # noqa: E402

FLAGS = flags.FLAGS
PROTOCOLS = ("nll",)

flags.DEFINE_string("workdir", None, "Run directory written by launchers.train.")
flags.DEFINE_enum("protocol", "nll", PROTOCOLS, "What to measure.")
flags.DEFINE_integer("num_samples", 1000, "Importance samples K per example.")
flags.DEFINE_integer("num_examples", 0, "Examples per split (0: all).")
flags.DEFINE_integer("chunk_size", 100, "Samples per chunk (bounds memory).")
flags.DEFINE_integer("seed", 0, "Evaluation seed.")
flags.DEFINE_string("out", None, "Output directory (default: WORKDIR/eval).")


def main(argv):
    check_common(argv, FLAGS.workdir, "a run directory")
    workdir = pathlib.Path(FLAGS.workdir).expanduser()
    if not (workdir / "config.json").is_file():
        fail(f"--workdir={workdir} has no config.json (not a run)")
    for flag, minimum in (("num_samples", 1), ("chunk_size", 1), ("num_examples", 0)):
        if getattr(FLAGS, flag) < minimum:
            fail(f"--{flag}={getattr(FLAGS, flag)} must be >= {minimum}")
    out = pathlib.Path(FLAGS.out).expanduser() if FLAGS.out else workdir / "eval"

    from vma_tf import evaluation
    from vma_tf.configs import ConfigError
    from vma_tf.data.files import DataError

    try:
        config, model, data, step = evaluation.load_run(workdir)
        result = evaluation.nll_protocol(
            model,
            data.final_evals,
            FLAGS.num_samples,
            FLAGS.num_examples,
            FLAGS.chunk_size,
            FLAGS.seed,
        )
    except (ConfigError, DataError) as e:
        fail(str(e))
    report = {
        "workdir": str(workdir),
        "preset": config.name,
        "step": step,
        "protocol": FLAGS.protocol,
        "results": result,
    }
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{FLAGS.protocol}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(report, indent=2) + "\n")
    os.replace(tmp, path)
    print(f"{config.name} @ step {step}, K = {FLAGS.num_samples}")
    for split, r in result.items():
        print(
            f"{split:<14} n={r['num_examples']:<6}"
            + "".join(
                f" {k}={r[k]['mean']:.3f}±{r[k]['stderr']:.3f}"
                for k in ("nll_bound", "kl_a", "kl_z", "recon")
            )
        )
    print(f"wrote {path}")


if __name__ == "__main__":
    app.run(main)
