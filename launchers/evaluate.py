r"""Evaluate a trained run: `python -m launchers.evaluate --workdir=DIR --protocol=NAME`.

Writes `OUT/<protocol>.json` (default OUT = DIR/eval) with every number as
mean and standard error (accuracies with a 95 % interval), and the protocol's
PNG figures next to it. Protocols (`vma_tf.protocols.REGISTRY`):

{protocols}

Example:

  python -m launchers.evaluate --workdir=~/vma_runs/recall16 --protocol=nll \
      --num_samples=1000 --num_examples=640

--num_samples is K of the bound (for classification: z-samples per memory
entry of the importance-weighted form); --num_examples is the number of test
examples (nll, recall_sizes, robustness points), sequences per row
(gmn_table, gmn_table_per_class) or episodes
(classification); 0 keeps each protocol's default. --classes and --shots pick
Table 1's rows and columns, e.g. --protocol=gmn_table_per_class --classes=16
(each row draws its own sequences, so one row's cells equal the whole table's);
--split=train draws them from the training characters (the bound on drawings
the model was trained on; the test table minus it is the generalisation gap).
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # Before TF is imported.

from absl import app, flags  # noqa: E402

from launchers.common import (  # noqa: E402
    check_common,
    fail,
    import_tensorflow_quietly,
    parse_flags,
)

# The protocols' registry does not import TensorFlow.
from vma_tf.configs import PRECISIONS  # noqa: E402
from vma_tf.protocols import (
    REGISTRY,
    TABLE_SPLITS,
    BoundOptions,
    ClassificationOptions,
    GmnTableOptions,
    GradientVarianceOptions,
    LargeMemoryOptions,
    Options,
)

FLAGS = flags.FLAGS


def _protocol_table() -> str:
    """One line per registered protocol: its name and its function's summary."""
    width = max(map(len, REGISTRY)) + 2
    return "\n".join(
        f"  {name:<{width}}{p.function.__doc__.splitlines()[0]}"
        for name, p in REGISTRY.items()
    )


__doc__ = __doc__.replace("{protocols}", _protocol_table())  # The usage text.

flags.DEFINE_string(
    "workdir",
    None,
    "Run directory written by launchers.train (comma list for kl_breakdown).",
)
flags.DEFINE_enum("protocol", "nll", list(REGISTRY), "What to measure.")
flags.DEFINE_integer(
    "num_samples", None, "Importance samples K (default 1000; 10 for classification)."
)
flags.DEFINE_integer(
    "num_examples",
    BoundOptions.num_examples,
    "Examples/sequences/episodes (0: protocol default).",
)
flags.DEFINE_integer(
    "iw_episodes",
    ClassificationOptions.iw_episodes,
    "classification: episodes also scored importance-weighted.",
)
flags.DEFINE_integer(
    "episode_alphabets",
    ClassificationOptions.episode_alphabets,
    "classification: alphabets each episode draws its characters from "
    "(0: all test alphabets; 1: within-alphabet episodes).",
)
flags.DEFINE_integer(
    "chunk_size", BoundOptions.chunk_size, "Samples per chunk (bounds memory)."
)
flags.DEFINE_list(
    "classes",
    None,
    "gmn_table, gmn_table_per_class: the rows C (characters per sequence); "
    "robustness: Fig. 5A's numbers of characters in memory, 1 (the "
    "reference's anchor) among them, each at most the test characters "
    "(default: all).",
)
flags.DEFINE_list(
    "shots",
    None,
    "gmn_table, gmn_table_per_class: the columns T (images in memory; per "
    "character for gmn_table_per_class), each < 20 (default: all).",
)
flags.DEFINE_boolean(
    "with_replacement",
    GmnTableOptions.with_replacement,
    "gmn_table: draw the sequences as GMN's code does, characters and "
    "drawings with replacement (a target can be a copy of a memory image; "
    "each cell also scores the copies and the others apart).",
)
flags.DEFINE_enum(
    "split",
    GmnTableOptions.split,
    list(TABLE_SPLITS),
    "gmn_table, gmn_table_per_class: draw the sequences from the test "
    "characters (Table 1) or the training ones (the drawings the model was "
    "trained on: test minus train is what it loses to generalisation).",
)
flags.DEFINE_integer("seed", BoundOptions.seed, "Evaluation seed.", lower_bound=0)
flags.DEFINE_enum(
    "precision",
    "float32",
    list(PRECISIONS),
    "Networks in float32, or in bfloat16 with float32 log-probabilities.",
)
flags.DEFINE_integer(
    "memory_size",
    LargeMemoryOptions.memory_size,
    "large_memory: MNIST images in memory (<= 130000).",
)
flags.DEFINE_integer(
    "memory_chunk",
    LargeMemoryOptions.memory_chunk,
    "large_memory: memory rows per per-entry chunk.",
)
flags.DEFINE_list(
    "estimators",
    None,
    "gradient_variance: estimators to measure (default: all the run supports).",
)
flags.DEFINE_integer(
    "num_draws",
    GradientVarianceOptions.num_draws,
    "gradient_variance: gradient draws per estimator.",
)
flags.DEFINE_boolean(
    "all_checkpoints",
    GradientVarianceOptions.all_checkpoints,
    "gradient_variance: also at every checkpoint the run kept (along training).",
)
flags.DEFINE_boolean(
    "jit",
    None,
    "Compile the evaluation with XLA (default: as the run trained, its "
    "config's jit: XLA for the MLP presets, TF's oneDNN kernels for the conv "
    "presets, which are faster on CPU).",
)
flags.DEFINE_string("out", None, "Output directory (default: WORKDIR/eval).")

# The flags that set a protocol option: those named like an option of some
# registered protocol. A protocol gets the ones it takes that the user set
# (the others keep the defaults of its options type) and refuses the others.
OPTION_FLAGS = tuple(
    dict.fromkeys(
        name for p in REGISTRY.values() for name in p.options.names() if name in FLAGS
    )
)
# Recorded in every report's "options", also by protocols that do not take
# them (with the flag's value), as reports have always had them.
ALWAYS_RECORDED = ("num_samples", "num_examples", "chunk_size", "seed")


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


def _check_values() -> None:
    """Refuses flag values out of range and unknown estimators (one line)."""
    for flag, minimum in (
        ("num_samples", 1),
        ("chunk_size", 1),
        ("num_examples", 0),
        ("iw_episodes", 0),
        ("episode_alphabets", 0),
        ("memory_size", 1),
        ("memory_chunk", 1),
        ("num_draws", 2),
    ):
        value = FLAGS[flag].value
        if value is not None and value < minimum:
            fail(f"--{flag}={value} must be >= {minimum}")
    for flag in ("classes", "shots"):
        value = FLAGS[flag].value
        if value is not None and not value:
            fail(f"--{flag}= is empty: give integers >= 1, comma-separated")
        if value is not None and not all(v.isdigit() and int(v) >= 1 for v in value):
            fail(f"--{flag}={','.join(value)} must be integers >= 1, comma-separated")
    from vma_tf.configs import ESTIMATORS  # No TensorFlow import.

    unknown = [e for e in FLAGS.estimators or () if e not in ESTIMATORS]
    if unknown:
        fail(
            f"--estimators={','.join(FLAGS.estimators)}: unknown {unknown}; "
            f"choose from {', '.join(ESTIMATORS)}"
        )


def _protocol_options(protocol: str) -> Options:
    """The options of `protocol` from the option flags the user set.

    Refuses (one line, exit 2) a set option flag that `protocol` does not take.
    """
    options = REGISTRY[protocol].options
    takes = [name for name in options.names() if name in OPTION_FLAGS]
    for name in OPTION_FLAGS:
        if FLAGS[name].present and name not in takes:
            fail(
                f"--{name} does not apply to --protocol={protocol}; it takes: "
                + ", ".join(f"--{n}" for n in takes)
            )
    values = {name: FLAGS[name].value for name in takes if FLAGS[name].present}
    if values.get("estimators") is not None:
        values["estimators"] = tuple(values["estimators"])
    for name in ("classes", "shots"):
        if values.get(name) is not None:
            values[name] = tuple(int(v) for v in values[name])
    return options.create(**values)


def _recorded(options: Options) -> dict:
    """The report's "options": `ALWAYS_RECORDED`, the protocol's others, then
    the precision (`vma_tf.reproduction.wanted_options` reads them)."""
    names = options.names()
    out = {
        name: getattr(options, name) if name in names else FLAGS[name].value
        for name in ALWAYS_RECORDED
    }
    # A protocol without K (figures, address_usage) records num_samples null.
    for name in names:
        if name in OPTION_FLAGS and name not in out:
            out[name] = getattr(options, name)
    # Precision is recorded in the report (not passed to the protocol).
    out["precision"] = FLAGS.precision
    return out


def _write(out: pathlib.Path, report: dict, figures) -> list[pathlib.Path]:
    """Writes `<protocol>.json` and the figures' PNGs to `out` (atomically)."""
    from vma_tf.workdir import atomic_write

    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{report['protocol']}.json"
    atomic_write(path, json.dumps(report, indent=2) + "\n")
    written = [path]
    for name, draw in figures.items():
        png = out / f"{name}.png"
        tmp = out / f".{name}.tmp.png"
        draw(tmp)
        os.replace(tmp, png)
        written.append(png)
    return written


def main(argv):
    check_common(argv, FLAGS.workdir, "a run directory")
    workdirs = [pathlib.Path(w).expanduser() for w in FLAGS.workdir.split(",") if w]
    if not workdirs:
        fail(f"--workdir={FLAGS.workdir} names no run directory")
    entry = REGISTRY[FLAGS.protocol]
    if len(workdirs) > 1 and not entry.options.several_runs:
        several = [n for n, p in REGISTRY.items() if p.options.several_runs]
        fail(f"--workdir takes several runs only with --protocol={'|'.join(several)}")
    for workdir in workdirs:
        if not (workdir / "config.json").is_file():
            fail(f"--workdir={workdir} has no config.json (not a run)")
    _check_values()
    options = _protocol_options(FLAGS.protocol)
    out = pathlib.Path(FLAGS.out).expanduser() if FLAGS.out else workdirs[0] / "eval"
    from vma_tf.errors import WorkdirError
    from vma_tf.workdir import check_output_dir

    try:  # Before the evaluation, which may take hours.
        check_output_dir("--out" if FLAGS.out else "--workdir", out)
    except WorkdirError as e:
        fail(str(e))

    import_tensorflow_quietly()
    from vma_tf import protocols
    from vma_tf.configs import ConfigError
    from vma_tf.data.files import DataError

    try:
        runs = [protocols.load(w, FLAGS.precision) for w in workdirs]
        if "jit" in options.names() and not FLAGS["jit"].present:
            options = dataclasses.replace(options, jit=runs[0].config.train.jit)
        target = runs if entry.options.several_runs else runs[0]
        result, figures = entry.function(target, options)
    except (ConfigError, DataError, WorkdirError) as e:
        fail(str(e))
    recorded = _recorded(options)
    report = {
        "workdirs": [str(w) for w in workdirs],
        "presets": [r.config.name for r in runs],
        "steps": [r.step for r in runs],
        "protocol": FLAGS.protocol,
        "options": recorded,
        "results": result,
    }
    written = _write(out, report, figures)
    what = [f"protocol {FLAGS.protocol}"]
    if hasattr(options, "num_draws"):
        what.append(f"{options.num_draws} draws, the run's K")
    elif recorded["num_samples"] is not None:
        what.append(f"K = {recorded['num_samples']}")
    if getattr(options, "split", "test") != "test":
        what.append(f"the {options.split} split's characters")
    run = runs[0]
    print(f"{run.config.name} @ step {run.step}, {', '.join(what)}")
    for line in _summary_lines(result):
        print(line)
    for p in written:
        print(f"wrote {p}")


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
