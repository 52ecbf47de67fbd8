r"""Evaluate a trained run: `python -m launchers.evaluate --workdir=DIR --protocol=NAME`.

Writes `OUT/<protocol>.json` (default OUT = DIR/eval) with every number as
mean and standard error (accuracies with a 95 % interval), and the protocol's
PNG figures next to it. Protocols (see `vma_tf.protocols`):

  nll             L_K on the test set, K up to thousands, streamed in chunks
  recall_sizes    MNIST recall model: memory of 256..2048 test images
  gmn_table       Table 1 (GMN split): T examples from C characters in memory
  robustness      Fig. 5: confounding characters / examples per character
  kl_breakdown    Fig. 4B: --workdir=DIR1,DIR2,... (e.g. 1, 4, 8 per class)
  classification  N-way k-shot accuracy (q(a|x) and importance weighted)
  figures         learning curves, samples, q(a|x) histograms

Example:

  python -m launchers.evaluate --workdir=~/vma_runs/recall16 --protocol=nll \
      --num_samples=1000 --num_examples=640

--num_samples is K of the bound (for classification: z-samples per memory
entry of the importance-weighted form); --num_examples is the number of test
examples (nll, recall_sizes, robustness points), sequences per row
(gmn_table) or episodes (classification); 0 keeps each protocol's default.
"""

from __future__ import annotations

import json
import os
import pathlib

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # Before TF is imported.

from absl import app, flags  # noqa: E402

from launchers.common import check_common, fail, parse_flags  # noqa: E402

FLAGS = flags.FLAGS
PROTOCOLS = (
    "nll",
    "recall_sizes",
    "gmn_table",
    "robustness",
    "kl_breakdown",
    "classification",
    "figures",
    "large_memory",
    "address_usage",
    "gradient_variance",
)

flags.DEFINE_string(
    "workdir",
    None,
    "Run directory written by launchers.train (comma list for kl_breakdown).",
)
flags.DEFINE_enum("protocol", "nll", PROTOCOLS, "What to measure.")
flags.DEFINE_integer(
    "num_samples", None, "Importance samples K (default 1000; 10 for classification)."
)
flags.DEFINE_integer(
    "num_examples", 0, "Examples/sequences/episodes (0: protocol default)."
)
flags.DEFINE_integer(
    "iw_episodes", 100, "classification: episodes also scored importance-weighted."
)
flags.DEFINE_integer("chunk_size", 100, "Samples per chunk (bounds memory).")
flags.DEFINE_integer("seed", 0, "Evaluation seed.", lower_bound=0)
flags.DEFINE_enum(
    "precision",
    "float32",
    ["float32", "mixed_bfloat16"],
    "Networks in float32, or in bfloat16 with float32 log-probabilities.",
)
flags.DEFINE_integer(
    "memory_size", 100_000, "large_memory: MNIST images in memory (<= 130000)."
)
flags.DEFINE_integer(
    "memory_chunk", 10_000, "large_memory: memory rows per per-entry chunk."
)
flags.DEFINE_list(
    "estimators",
    None,
    "gradient_variance: estimators to measure (default: all the run supports).",
)
flags.DEFINE_integer(
    "num_draws", 100, "gradient_variance: gradient draws per estimator."
)
flags.DEFINE_boolean(
    "all_checkpoints",
    False,
    "gradient_variance: also at every checkpoint the run kept (along training).",
)
flags.DEFINE_string("out", None, "Output directory (default: WORKDIR/eval).")


def _summary_lines(result: dict, prefix: str = "") -> list[str]:
    """One line per leaf group of `{"mean", "stderr"}` / accuracy numbers."""
    lines = []
    numbers = []
    for key, value in result.items():
        if isinstance(value, dict) and "mean" in value and "stderr" in value:
            numbers.append(f"{key}={value['mean']:.3f}±{value['stderr']:.3f}")
        elif isinstance(value, dict) and "accuracy" in value:
            numbers.append(
                f"{key}={100 * value['accuracy']:.1f}%±{100 * value['ci95']:.1f}"
            )
        elif isinstance(value, dict):
            lines += _summary_lines(value, f"{prefix}{key} ")
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            numbers.append(f"{key}={value:g}")
    if numbers:
        lines.insert(0, f"{prefix.strip():<22} " + " ".join(numbers))
    return lines


def main(argv):
    check_common(argv, FLAGS.workdir, "a run directory")
    workdirs = [pathlib.Path(w).expanduser() for w in FLAGS.workdir.split(",") if w]
    if len(workdirs) > 1 and FLAGS.protocol != "kl_breakdown":
        fail("--workdir takes several runs only with --protocol=kl_breakdown")
    for workdir in workdirs:
        if not (workdir / "config.json").is_file():
            fail(f"--workdir={workdir} has no config.json (not a run)")
    num_samples = FLAGS.num_samples
    if num_samples is None:
        num_samples = 10 if FLAGS.protocol == "classification" else 1000
    for flag, value, minimum in (
        ("num_samples", num_samples, 1),
        ("chunk_size", FLAGS.chunk_size, 1),
        ("num_examples", FLAGS.num_examples, 0),
        ("iw_episodes", FLAGS.iw_episodes, 0),
        ("memory_size", FLAGS.memory_size, 1),
        ("memory_chunk", FLAGS.memory_chunk, 1),
        ("num_draws", FLAGS.num_draws, 2),
    ):
        if value < minimum:
            fail(f"--{flag}={value} must be >= {minimum}")
    from vma_tf.configs import ESTIMATORS  # No TensorFlow import.

    unknown = [e for e in FLAGS.estimators or () if e not in ESTIMATORS]
    if unknown:
        fail(
            f"--estimators={','.join(FLAGS.estimators)}: unknown {unknown}; "
            f"choose from {', '.join(ESTIMATORS)}"
        )
    out = pathlib.Path(FLAGS.out).expanduser() if FLAGS.out else workdirs[0] / "eval"

    from vma_tf import protocols
    from vma_tf.configs import ConfigError
    from vma_tf.data.files import DataError
    from vma_tf.errors import WorkdirError

    options = dict(
        num_samples=num_samples,
        num_examples=FLAGS.num_examples,
        chunk_size=FLAGS.chunk_size,
        seed=FLAGS.seed,
    )
    # Recorded in the report (not passed to the protocol).
    precision = FLAGS.precision
    if FLAGS.protocol == "classification":
        options["iw_episodes"] = FLAGS.iw_episodes
    if FLAGS.protocol == "large_memory":
        options["memory_size"] = FLAGS.memory_size
        options["memory_chunk"] = FLAGS.memory_chunk
    if FLAGS.protocol == "gradient_variance":
        options["estimators"] = FLAGS.estimators
        options["num_draws"] = FLAGS.num_draws
        options["all_checkpoints"] = FLAGS.all_checkpoints
    try:
        policy = None if FLAGS.precision == "float32" else FLAGS.precision
        runs = [protocols.load(w, policy) for w in workdirs]
        target = runs if FLAGS.protocol == "kl_breakdown" else runs[0]
        result, figures = protocols.PROTOCOLS[FLAGS.protocol](target, **options)
    except (ConfigError, DataError, WorkdirError) as e:
        fail(str(e))
    report = {
        "workdirs": [str(w) for w in workdirs],
        "presets": [r.config.name for r in runs],
        "steps": [r.step for r in runs],
        "protocol": FLAGS.protocol,
        "options": {**options, "precision": precision},
        "results": result,
    }
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{FLAGS.protocol}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(report, indent=2) + "\n")
    os.replace(tmp, path)
    written = [path]
    for name, draw in figures.items():
        png = out / f"{name}.png"
        tmp = out / f".{name}.tmp.png"
        draw(tmp)
        os.replace(tmp, png)
        written.append(png)
    run = runs[0]
    what = (
        f"{FLAGS.num_draws} draws, the run's K"
        if FLAGS.protocol == "gradient_variance"
        else f"K = {num_samples}"
    )
    print(f"{run.config.name} @ step {run.step}, protocol {FLAGS.protocol}, {what}")
    for line in _summary_lines(result):
        print(line)
    for p in written:
        print(f"wrote {p}")


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
