r"""Prepare the datasets in tfds' cache: `python -m launchers.prepare_data`.

Reads the raw files (`--data_dir`, else `$VMA_DATA_DIR`, else `./data`),
lets tensorflow-datasets check their sha256 and write its records into the
cache (`$VMA_TFDS_DIR`, else `~/.cache/vma_tf/tfds`), and decodes every split
once. Training and evaluation prepare what they need on first use anyway;
this does it up front (e.g. before a test suite or on a new machine).

  python -m launchers.prepare_data --datasets=binarized_mnist,omniglot_fewshot
"""

from __future__ import annotations

import time

from absl import app, flags

from launchers.common import fail, import_tensorflow_quietly, parse_flags

FLAGS = flags.FLAGS
flags.DEFINE_list(
    "datasets", None, "Datasets to prepare (default: all the project uses)."
)
flags.DEFINE_string("data_dir", None, "Directory of the raw files.")


def main(argv):
    if len(argv) > 1:
        fail(f"unexpected arguments {argv[1:]}; all options are --flags")
    from vma_tf.data.files import DATASET_FILES, DataError

    names = FLAGS.datasets or list(DATASET_FILES)
    unknown = sorted(set(names) - set(DATASET_FILES))
    if unknown:
        fail(
            f"--datasets={','.join(unknown)} unknown; choose from {', '.join(DATASET_FILES)}"
        )
    import_tensorflow_quietly()
    from vma_tf.data import tfds_data

    for name in names:
        t0 = time.perf_counter()
        try:
            prepared = tfds_data.prepare(name, FLAGS.data_dir)
            splits = sorted(prepared.info.splits)
            for split in splits:
                tfds_data.read_split(prepared, split)
        except DataError as e:
            fail(str(e))
        took = time.perf_counter() - t0
        print(
            f"{name}: {', '.join(splits)} ready in {prepared.data_dir} ({took:.1f} s)"
        )


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
