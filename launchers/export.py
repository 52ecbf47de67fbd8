r"""Export a trained run for TF Serving: `python -m launchers.export`.

  python -m launchers.export --workdir=~/vma_runs/recall16 \
      --export_dir=~/vma_serving/vma [--version=N]

writes `EXPORT_DIR/N/saved_model.pb` and `variables/` (N defaults to the
checkpoint's step), the layout `tensorflow/serving` serves with
`--model_base_path=EXPORT_DIR`. An existing version is never overwritten; the
SavedModel is written to a temporary directory and renamed into place. The
signatures (memory is a request input) are listed in `vma_tf.export` and in
README "Export and serving"; `saved_model_cli show --all --dir EXPORT_DIR/N`
prints them.
"""

from __future__ import annotations

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
from vma_tf.configs import ConfigError  # noqa: E402
from vma_tf.data.files import DataError  # noqa: E402
from vma_tf.workdir import checkpoint_step  # noqa: E402

FLAGS = flags.FLAGS

flags.DEFINE_string("workdir", None, "Run directory written by launchers.train.")
flags.DEFINE_string(
    "export_dir", None, "Model base path; the model goes to EXPORT_DIR/<version>."
)
flags.DEFINE_integer(
    "version", None, "Version directory name (default: the checkpoint's step)."
)


def main(argv):
    check_common(argv, FLAGS.workdir, "the run to export")
    if not FLAGS.export_dir:
        fail("--export_dir is required (the model base path)")
    workdir = pathlib.Path(FLAGS.workdir).expanduser()
    export_dir = pathlib.Path(FLAGS.export_dir).expanduser()
    if not (workdir / "config.json").is_file():
        fail(f"--workdir={workdir} has no config.json (not a run)")
    if FLAGS.version is not None and FLAGS.version < 1:
        fail(f"--version={FLAGS.version} must be >= 1")
    step = checkpoint_step(workdir)  # Its *.index files, no TensorFlow.
    if not step:
        fail(f"--workdir={workdir} has no checkpoint yet")
    version = step if FLAGS.version is None else FLAGS.version
    if (export_dir / str(version)).exists():
        fail(
            f"{export_dir / str(version)} already exists; refusing to overwrite "
            "(choose another --version)"
        )
    if export_dir.exists() and not export_dir.is_dir():
        fail(f"--export_dir={export_dir} is not a directory")

    import_tensorflow_quietly()
    from vma_tf import export  # TensorFlow: only after the checks above.

    try:
        path, step = export.export_run(workdir, export_dir, FLAGS.version)
    except (ConfigError, DataError) as e:  # ConfigError: also Workdir/Export.
        fail(str(e))
    print(f"exported {workdir} @ step {step} to {path}")
    print(f"  signatures: {', '.join(export.read_metadata(path)['signatures'])}")


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
