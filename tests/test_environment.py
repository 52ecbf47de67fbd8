"""The environment is Keras 3 on TensorFlow; the library never uses tf_keras."""

import pathlib
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]


def test_keras3_tensorflow_backend():
    import keras
    import tensorflow as tf

    assert keras.__version__.startswith("3.")
    assert keras.backend.backend() == "tensorflow"
    assert tf.__version__.startswith("2.21")


def test_library_never_imports_tf_keras():
    for path in (REPO / "vma_tf").rglob("*.py"):
        assert "tf_keras" not in path.read_text().replace("tf_keras package", ""), path


def test_importing_config_modules_does_not_import_tensorflow():
    code = (
        "import sys, vma_tf, vma_tf.configs, vma_tf.errors, vma_tf.workdir, vma_tf.data.files,"
        " vma_tf.time_to_quality;"
        "print('tensorflow' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        text=True,
        capture_output=True,
        check=True,
    ).stdout.strip()
    assert out == "False"


def test_no_pickle_loading():
    for path in list((REPO / "vma_tf").rglob("*.py")) + list(
        (REPO / "launchers").rglob("*.py")
    ):
        assert "allow_pickle=True" not in path.read_text(), path
