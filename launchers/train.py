r"""Train a VMA / VAE model: `python -m launchers.train --preset=NAME --workdir=DIR`.

Flags override the preset; rerunning the same command resumes from the
latest checkpoint in DIR. Every config field is also a dotted flag
`--config.SECTION.NAME` (see `--helpfull`). Example:

  python -m launchers.train --preset=mnist_recall --memory_size=16 \
      --config.model.latent_dim=16 --steps=5000 --workdir=~/vma_runs/recall16
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # Before TF is imported.

from absl import app, flags  # noqa: E402

# configs and data.files do not import TensorFlow: bad flags fail fast.
from launchers.common import (  # noqa: E402
    build_config,
    check_common,
    define_train_flags,
    fail,
    given_fields,
    import_tensorflow_quietly,
    parse_flags,
)

FLAGS = flags.FLAGS

define_train_flags()


def main(argv):
    check_common(argv, FLAGS.workdir, "the run directory")
    from vma_tf.data.files import DataError
    from vma_tf.errors import ConfigError, Interrupted, NonFiniteError
    from vma_tf.workdir import check_data_files, preflight

    try:
        config = build_config()
        # Every input check before TensorFlow loads: errors stay one clean line.
        config, workdir = preflight(
            config, FLAGS.workdir, check_data=False, given=given_fields()
        )
        import_tensorflow_quietly()
        check_data_files(config)
        from vma_tf import training
        from vma_tf.metrics_log import format_summary

        summary = training.train_and_evaluate(config, workdir, progress=FLAGS.progress)
    except (ConfigError, DataError, NonFiniteError) as e:
        fail(str(e))
    except Interrupted as e:  # SIGINT / SIGTERM: the current step is saved.
        print(str(e), file=sys.stderr)
        sys.exit(e.exit_code)
    print(format_summary(summary))


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
