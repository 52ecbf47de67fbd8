r"""Train a VMA / VAE model: `python -m launchers.train --preset=NAME --workdir=DIR`.

Flags override the preset; rerunning the same command resumes from the
latest checkpoint in DIR. Example:

  python -m launchers.train --preset=mnist_recall --memory_size=16 \
      --steps=5000 --workdir=~/vma_runs/recall16
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # Before TF is imported.

from absl import app, flags  # noqa: E402

from launchers.common import (  # noqa: E402
    check_common,
    fail,
    import_tensorflow_quietly,
    parse_flags,
)

FLAGS = flags.FLAGS

flags.DEFINE_string("preset", "mnist_recall", "Named experiment preset.")
flags.DEFINE_string(
    "workdir", None, "Run directory (created; resumed if it holds a checkpoint)."
)
flags.DEFINE_string(
    "config_json",
    None,
    "Start from this config.json instead of --preset (e.g. a tuned config).",
)
flags.DEFINE_integer("steps", None, "Total optimiser steps.")
flags.DEFINE_integer("batch_size", None, "Targets per step (B).")
flags.DEFINE_integer("num_samples", None, "Samples K from q per example (>= 2).")
flags.DEFINE_integer("memory_size", None, "Memory slots |M|.")
flags.DEFINE_float("learning_rate", None, "Adam learning rate.")
flags.DEFINE_integer("seed", None, "Seed for parameters, data and samples.")
flags.DEFINE_string(
    "data_dir", None, "Data directory (else $VMA_DATA_DIR, then ./data)."
)
flags.DEFINE_integer("log_every", None, "Steps between train-metric lines.")
flags.DEFINE_integer("eval_every", None, "Steps between evaluations.")
flags.DEFINE_integer("checkpoint_every", None, "Steps between checkpoints.")
flags.DEFINE_integer(
    "eval_memory_size", None, "Extra test-time memory size for recall (0: none)."
)
flags.DEFINE_integer("eval_batches", None, "Batches per evaluation (0: all).")
flags.DEFINE_enum(
    "similarity", None, ["normalized", "dot", "cosine"], "Similarity S(m, x)."
)
flags.DEFINE_enum("prior", None, ["learned", "flat"], "Address prior p(a).")
flags.DEFINE_enum(
    "baseline", None, ["arithmetic", "geometric"], "VIMCO leave-one-out baseline."
)
flags.DEFINE_enum(
    "estimator",
    None,
    ["vimco", "vimco_geometric", "nvil", "rws", "gumbel"],
    "Address gradient estimator in training (evaluation is always the "
    "discrete model's L_K).",
)
flags.DEFINE_float(
    "gumbel_temperature", None, "Temperature of the relaxed address (gumbel)."
)
flags.DEFINE_boolean(
    "straight_through",
    None,
    "gumbel: hard one-hot address forward, relaxed gradient (straight-through).",
)
flags.DEFINE_enum(
    "decoder_context", None, ["first", "all"], "Which decoder layers see m_a."
)
flags.DEFINE_integer("channels", None, "Feature maps of every conv layer (Omniglot).")
flags.DEFINE_float("weight_decay", None, "L2 penalty on all parameters except M.")
flags.DEFINE_integer("batch_classes", None, "Characters per few-shot episode.")
flags.DEFINE_integer("targets_per_class", None, "Targets per character.")
flags.DEFINE_integer(
    "memory_per_class", None, "Other examples of each character in memory."
)
flags.DEFINE_integer("confounder_classes", None, "Extra characters only in memory.")
flags.DEFINE_enum(
    "skip_mode", None, ["concat", "add"], "How the conv decoder joins skip paths."
)
flags.DEFINE_integer(
    "skip_levels", None, "Decoder resolutions (coarsest first) with skips from m_a."
)
flags.DEFINE_boolean(
    "tie_pyramid", None, "Share q(z|x,m)'s conv layers with m's pyramid (conv)."
)
flags.DEFINE_boolean(
    "tie_embedders",
    None,
    "One embedding network h for memory entries and queries (h = h^q; "
    "episodic memory only).",
)
flags.DEFINE_float(
    "memory_init_scale", None, "Stddev of the N(0, s^2) init of learned memory."
)
flags.DEFINE_enum(
    "decoder_bias_init",
    None,
    ["zero", "data_mean"],
    "Initial output bias of the MLP decoder (data_mean: logits of the pixel means).",
)
flags.DEFINE_enum(
    "prior_z_init",
    None,
    ["glorot", "standard_normal"],
    "Init of p(z|m_a)'s output layer (standard_normal: N(0, I) for every entry).",
)
flags.DEFINE_enum(
    "encoder_context_init",
    None,
    ["glorot", "zeros"],
    "Init of the m_a-half of q(z|x, m_a)'s first layer (zeros: starts as q(z|x)).",
)
flags.DEFINE_integer(
    "decoder_refine",
    None,
    "Extra full-resolution ReLU conv layers before the conv decoder's logits.",
)
flags.DEFINE_string(
    "init_from",
    None,
    "Warm start: initial weights from this run directory's newest checkpoint.",
)
flags.DEFINE_boolean("jit", None, "Compile steps with XLA (jit_compile=True).")
flags.DEFINE_enum(
    "strategy",
    None,
    ["default", "mirrored", "multi_worker"],
    "tf.distribute strategy: default (one device), mirrored (all local GPUs), "
    "multi_worker (MultiWorkerMirroredStrategy from $TF_CONFIG).",
)
flags.DEFINE_boolean(
    "deterministic",
    None,
    "tf.config.experimental.enable_op_determinism(): every kernel deterministic "
    "(GPU too); with it a run killed at any step resumes bit-exactly.",
)
flags.DEFINE_boolean(
    "skip_nonfinite",
    None,
    "Skip (no weight/optimizer update) a step with a NaN/Inf loss or gradient "
    "and count it in the skipped_steps metric, instead of stopping.",
)
flags.DEFINE_boolean("progress", True, "Show a progress bar.")


def main(argv):
    check_common(argv, FLAGS.workdir, "the run directory")
    # configs and data.files do not import TensorFlow: bad flags fail fast.
    from vma_tf import configs
    from vma_tf.data.files import DataError
    from vma_tf.errors import NonFiniteError
    from vma_tf.workdir import preflight

    try:
        if FLAGS.config_json:
            base = configs.load_json(FLAGS.config_json)
        else:
            base = configs.get_preset(FLAGS.preset)
        config = configs.override(
            base, **{k: getattr(FLAGS, k) for k in configs.FLAG_FIELDS}
        )
        # Every input check before TensorFlow loads: errors stay one clean line.
        workdir = preflight(config, FLAGS.workdir)
        import_tensorflow_quietly()
        from vma_tf import training

        summary = training.train_and_evaluate(config, workdir, progress=FLAGS.progress)
    except (configs.ConfigError, DataError, NonFiniteError) as e:
        fail(str(e))
    print(training.format_summary(summary))


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
