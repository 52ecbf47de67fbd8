"""Measure a preset: compile time, ms/step, FLOP utilisation, eval and input rates.

    python -m launchers.benchmark --preset=omniglot_fewshot \
        --memory_sizes=32,128,512,2048 --json=/tmp/bench.json

Prints one table (a row per memory size) and writes every number as JSON.
Steps run on synthetic inputs of the preset's shapes (see `vma_tf.benchmark`).
Run it alone on the machine: other processes distort every number.
Steps and training time to reach given test bounds: `launchers.time_to_quality`.

Every input is checked before TensorFlow loads: flags, the config, the --json
path and (with --input_batches > 0) the data files, each failure one
`error:` line and exit 2, nothing written.
"""

from __future__ import annotations

import json
import os
import pathlib

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # Before TF is imported.

from absl import app, flags

from launchers.common import (
    build_config,
    config_overrides,
    define_config_flags,
    fail,
    import_tensorflow_quietly,
    parse_flags,
)
from vma_tf import configs
from vma_tf.configs import PRECISIONS
from vma_tf.data.files import DataError
from vma_tf.workdir import atomic_write, check_data_files, check_output_file

FLAGS = flags.FLAGS

# --preset and the config flags of the timed model (default: the preset's);
# --steps here counts timed steps, so training's steps is only --config.train.steps.
define_config_flags(
    "omniglot_fewshot",
    short=(
        "channels",
        "num_samples",
        "estimator",
        "straight_through",
        "jit",
        "data_dir",
        "fast_convs",
    ),
    config_json=False,
)
flags.DEFINE_list(
    "memory_sizes", [], "Comma-separated |M| values (default: the preset's)."
)
flags.DEFINE_integer("steps", 20, "Timed steps per memory size (median reported).")
flags.DEFINE_integer("warmup", 3, "Untimed steps after compilation.")
flags.DEFINE_integer(
    "eval_samples", 1000, "K of the timed streamed evaluation (0 skips it)."
)
flags.DEFINE_integer(
    "input_batches", 50, "Batches read from the real input pipeline (0 skips it)."
)
flags.DEFINE_string("json", None, "Write the report here as JSON.")
flags.DEFINE_boolean(
    "conv_layers",
    False,
    "Instead: time each stride-2/transposed conv, Keras' layer vs fast_convs "
    "(reads --channels, default 64, --steps, --warmup and --json only).",
)
flags.DEFINE_string(
    "precision",
    "float32",
    "Keras dtype policies to time, one table each (variables stay float32); "
    "two or more, e.g. float32,mixed_bfloat16, are timed back to back in this "
    "process and the ms/step ratio to the first is printed.",
)
flags.register_validator(
    "precision",
    lambda v: all(p in PRECISIONS for p in v.split(",")),
    message=f"comma-separated values, each one of {', '.join(PRECISIONS)}",
)


def _memory_sizes() -> list[int]:
    """`--memory_sizes` as integers, after the checks of the count flags."""
    try:
        sizes = [int(s) for s in FLAGS.memory_sizes]
    except ValueError:
        fail(
            f"--memory_sizes={','.join(FLAGS.memory_sizes)} must be "
            "comma-separated positive integers"
        )
    if any(s < 1 for s in sizes):
        fail(f"--memory_sizes={','.join(FLAGS.memory_sizes)} must all be >= 1")
    _check_minimums(steps=1, warmup=0, eval_samples=0, input_batches=0)
    return sizes


def _check_minimums(**minimums: int) -> None:
    """Fails on the first flag below its minimum (a flag left unset, None,
    passes)."""
    for flag, minimum in minimums.items():
        value = getattr(FLAGS, flag)
        if value is not None and value < minimum:
            fail(f"--{flag}={value} must be >= {minimum}")


def _checked_config(sizes: list[int]) -> configs.Config:
    """The validated config, after the output path and data checks (no TF)."""
    config = configs.validate(
        build_config(
            refuse={
                "train.precision": "is not used by launchers.benchmark: give "
                "--precision (the policies it times)"
            }
        )
    )
    if sizes and config.model.kind == "vae":
        raise configs.ConfigError(
            f"--memory_sizes: preset {FLAGS.preset!r} is a VAE (no memory)"
        )
    if FLAGS.json:
        check_output_file("--json", FLAGS.json)
    if FLAGS.input_batches:  # The only step that reads the data files.
        import_tensorflow_quietly()
        check_data_files(config)
    return config


# What --conv_layers reads besides --steps, --warmup and --json.
_CONV_FLAGS = ("channels",)


def _conv_layers() -> None:
    """`--conv_layers`: each stride-2 / transposed conv timed, Keras' layer
    against `fast_convs` (`benchmark.conv_layer_timings`); a flag it does
    not use is refused."""
    try:
        given = [n for n, _ in config_overrides().values() if n not in _CONV_FLAGS]
    except configs.ConfigError as e:
        fail(str(e))
    given += [
        n
        for n in (
            "preset",
            "memory_sizes",
            "eval_samples",
            "input_batches",
            "precision",
        )
        if FLAGS[n].present
    ]
    if given:
        fail(
            f"--{given[0]} does not apply with --conv_layers (it reads "
            "--channels, --steps, --warmup and --json)"
        )
    _check_minimums(steps=1, warmup=0, channels=1)
    if FLAGS.json:
        try:
            check_output_file("--json", FLAGS.json)
        except configs.ConfigError as e:  # WorkdirError
            fail(str(e))
    import_tensorflow_quietly()
    from vma_tf import benchmark  # TensorFlow: only after every check.

    rows = benchmark.conv_layer_timings(
        channels=FLAGS.channels or 64, steps=FLAGS.steps, warmup=FLAGS.warmup
    )
    print(benchmark.format_conv_layers(rows))
    if FLAGS.json:
        atomic_write(
            pathlib.Path(FLAGS.json), json.dumps({"conv_layers": rows}, indent=2) + "\n"
        )
        print(f"wrote {FLAGS.json}")


def main(argv):
    if len(argv) > 1:
        fail(f"unexpected arguments {argv[1:]}; all options are --flags")
    if FLAGS.conv_layers:
        _conv_layers()
        return

    sizes = _memory_sizes()
    try:
        config = _checked_config(sizes)
        import_tensorflow_quietly()
        from vma_tf import benchmark  # TensorFlow: only after every check.

        reports = [
            benchmark.run_benchmark(
                config,
                sizes,
                steps=FLAGS.steps,
                warmup=FLAGS.warmup,
                eval_samples=FLAGS.eval_samples,
                input_batches=FLAGS.input_batches,
                dtype_policy=precision,
            )
            for precision in FLAGS.precision.split(",")
        ]
    except (configs.ConfigError, DataError) as e:
        fail(str(e))
    print("\n".join(benchmark.format_table(r) for r in reports))
    if len(reports) > 1:
        print(benchmark.format_precision_ratios(reports))
    report = reports[0] if len(reports) == 1 else {"runs": reports}
    if FLAGS.json:
        atomic_write(pathlib.Path(FLAGS.json), json.dumps(report, indent=2) + "\n")
        print(f"wrote {FLAGS.json}")


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
