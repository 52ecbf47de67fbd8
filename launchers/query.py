r"""Query a served VMA model: `python -m launchers.query --url=... --signature=...`.

  python -m launchers.query --url=http://localhost:8501 --signature=classify \
      --x=queries.npy --memory=memory.npy --memory_labels=labels.npy

REST for `--url=http://HOST:8501`, gRPC for `--url=grpc://HOST:8500` (needs
the optional tensorflow-serving-api package). Array inputs come from .npy or
.npz files (np.load with allow_pickle=False; an .npz holds the input under
its own name, e.g. "x", or a single array), or from a comma-separated list of
image files (8-bit, or 16-bit grayscale, scaled to [0, 1], `[N, H, W, 1]`;
opaque only; `--flatten` for MNIST's `[N, 784]`, `--invert` for dark strokes
on white). `--inputs=FILE.npz` gives any inputs by name. Only the inputs the signature takes are sent:
  log_likelihood*  x, memory, num_samples, seed
  address*         x, memory, k
  sample*          memory, num, seed
  classify         x, memory, memory_labels
(learned-memory models' log_likelihood/address/sample take no memory).
`--print_request` prints the REST request body and sends nothing (e.g. for
curl -d @body.json); `--out=FILE.npz` saves the outputs.
"""

from __future__ import annotations

import json
import math
import os
import pathlib
import re
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # Before TF (gRPC) loads.

from absl import app, flags  # noqa: E402

from launchers.common import fail, parse_flags  # noqa: E402

FLAGS = flags.FLAGS

SCALARS = {
    "log_likelihood": ("num_samples", "seed"),
    "address": ("k",),
    "sample": ("num", "seed"),
    "classify": (),
}
NEEDS = {
    "log_likelihood": ("x",),
    "address": ("x",),
    "sample": (),
    "classify": ("x", "memory", "memory_labels"),
}
SIGNATURES = (
    "serving_default",
    "log_likelihood",
    "address",
    "sample",
    "classify",
    "log_likelihood_with_memory",
    "address_with_memory",
    "sample_with_memory",
)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif")

flags.DEFINE_string(
    "url", None, "Server: http://HOST:8501 (REST) or grpc://HOST:8500 (gRPC)."
)
flags.DEFINE_string("model_name", "vma", "The served model's name (MODEL_NAME).")
flags.DEFINE_integer("model_version", None, "Model version (default: newest).")
flags.DEFINE_enum("signature", "serving_default", SIGNATURES, "Signature to call.")
flags.DEFINE_string("inputs", None, ".npz with inputs by name (flags override).")
flags.DEFINE_string("x", None, "Queries: .npy/.npz, or image files a.png,b.png.")
flags.DEFINE_string("memory", None, "Memory: .npy/.npz, or image files.")
flags.DEFINE_string("memory_labels", None, "Labels: .npy/.npz or 0,0,1,1,...")
flags.DEFINE_integer(
    "num_samples", 100, "K of the bound (log_likelihood, >= 2).", lower_bound=2
)
flags.DEFINE_integer("k", 5, "Top-k slots (address).", lower_bound=1)
flags.DEFINE_integer("num", 8, "Samples to draw (sample).", lower_bound=1)
flags.DEFINE_string("seed", "0,0", "Stateless seed: two integers A,B.")
flags.DEFINE_bool("flatten", False, "Flatten images to [N, H*W] (MNIST models).")
flags.DEFINE_bool("invert", False, "Images: use 1 - intensity.")
flags.DEFINE_float("timeout", 60.0, "Request timeout in seconds.")
flags.DEFINE_bool("print_request", False, "Print the REST request body; send nothing.")
flags.DEFINE_string("out", None, "Write the outputs to this .npz file.")


def _base(signature: str) -> str:
    if signature == "serving_default":
        return "log_likelihood"
    return signature.removesuffix("_with_memory")


def _load_array(flag: str, spec: str):
    import numpy as np

    path = pathlib.Path(spec).expanduser()
    if path.suffix in (".npy", ".npz"):
        if not path.is_file():
            fail(f"--{flag}={spec}: no such file")
        try:
            loaded = np.load(path, allow_pickle=False)
        except (ValueError, OSError) as e:
            fail(f"--{flag}={spec}: cannot read ({' '.join(str(e).split())})")
        if path.suffix == ".npy":
            return loaded
        with loaded:
            names = list(loaded.files)
            name = flag if flag in names else names[0] if len(names) == 1 else None
            if name is None:
                fail(f"--{flag}={spec} holds {names}; expected {flag!r} or one array")
            try:
                return loaded[name]
            except (ValueError, OSError) as e:
                fail(f"--{flag}={spec}: cannot read ({' '.join(str(e).split())})")
    if flag == "memory_labels" and re.fullmatch(r"-?\d+(,-?\d+)*", spec):
        labels = [int(v) for v in spec.split(",")]
        if any(abs(v) >= 2**63 for v in labels):
            fail(f"--{flag}={spec}: labels must lie in the int32 range")
        # int64: `serving_client.as_inputs` refuses values outside int32.
        return np.array(labels, np.int64)
    files = [pathlib.Path(p).expanduser() for p in spec.split(",") if p]
    if files and all(f.suffix.lower() in IMAGE_SUFFIXES for f in files):
        return _load_images(flag, files)
    fail(f"--{flag}={spec} must be a .npy/.npz file or image files")


def _load_images(flag: str, files):
    import numpy as np
    from PIL import Image

    images = []
    for f in files:
        if not f.is_file():
            fail(f"--{flag}: no such image {f}")
        try:
            with Image.open(f) as im:
                images.append(_gray(flag, f, im))
        except OSError as e:
            fail(f"--{flag}: cannot read image {f} ({e})")
    if len({im.shape for im in images}) > 1:
        fail(f"--{flag}: images of different sizes {sorted({i.shape for i in images})}")
    batch = np.stack(images)[..., None]  # [N, H, W, 1]
    if FLAGS.invert:
        batch = 1.0 - batch
    if FLAGS.flatten:
        batch = batch.reshape(len(batch), -1)
    return batch


def _gray(flag: str, path, im):
    """An opened image as float32 `[H, W]` in [0, 1]: 8-bit images (any
    colour mode, through Pillow's luminance) and 16-bit grayscale; one error
    line for what would read as other values (see-through pixels, whose
    colour is undefined; 32-bit and float images)."""
    import numpy as np

    if "A" in im.getbands() or "transparency" in im.info:
        if np.asarray(im.convert("RGBA").getchannel("A")).min() < 255:
            fail(
                f"--{flag}: image {path} has transparent pixels; save it opaque "
                "(strokes on a solid background)"
            )
    if im.mode.startswith("I;16"):
        return np.asarray(im, np.float32) / 65535.0
    if im.mode in ("I", "F"):
        fail(
            f"--{flag}: image {path} is {im.mode} (32-bit); save it as 8- or "
            "16-bit grayscale"
        )
    return np.asarray(im.convert("L"), np.float32) / 255.0


def _parse_seed(spec: str):
    parts = spec.split(",")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        values = []
    if len(values) != 2:
        fail(f"--seed={spec} must be two integers A,B")
    return values


def _gather_inputs(signature: str) -> dict:
    import numpy as np

    base = _base(signature)
    inputs = {}
    if FLAGS.inputs:
        path = pathlib.Path(FLAGS.inputs).expanduser()
        if not path.is_file():
            fail(f"--inputs={FLAGS.inputs}: no such file")
        try:
            with np.load(path, allow_pickle=False) as loaded:
                inputs = {k: loaded[k] for k in loaded.files}
        except (ValueError, OSError) as e:
            fail(f"--inputs={FLAGS.inputs}: cannot read ({' '.join(str(e).split())})")
    for flag in ("x", "memory", "memory_labels"):
        value = getattr(FLAGS, flag)
        if value:
            inputs[flag] = _load_array(flag, value)
    scalars = {
        "num_samples": FLAGS.num_samples,
        "k": FLAGS.k,
        "num": FLAGS.num,
        "seed": _parse_seed(FLAGS.seed),
    }
    for name in SCALARS[base]:  # A flag given overrides --inputs.
        if FLAGS[name].present or name not in inputs:
            inputs[name] = scalars[name]
    wanted = {"x", "memory", *SCALARS[base]}
    if base == "classify":
        wanted.add("memory_labels")
    if base == "sample":
        wanted.discard("x")
    missing = [n for n in NEEDS[base] if n not in inputs]
    if missing:
        fail(f"--signature={signature} needs " + ", ".join(f"--{n}" for n in missing))
    return {k: v for k, v in inputs.items() if k in wanted}


def _summary(name: str, value) -> str:
    import numpy as np

    text = np.array2string(
        np.asarray(value), precision=4, threshold=20, edgeitems=3, max_line_width=100
    )
    return f"{name} {list(np.shape(value))}:\n  " + text.replace("\n", "\n  ")


def main(argv):
    if len(argv) > 1:
        fail(f"unexpected arguments {argv[1:]}; all options are --flags")
    if not FLAGS.url and not FLAGS.print_request:
        fail("--url is required (http://HOST:8501 or grpc://HOST:8500)")
    if FLAGS.url and not re.match(r"^(https?|grpc)://[^/]", FLAGS.url):
        fail(f"--url={FLAGS.url} must start with http://, https:// or grpc://")
    if FLAGS.model_version is not None and FLAGS.model_version < 1:
        fail(f"--model_version={FLAGS.model_version} must be >= 1")
    if not (math.isfinite(FLAGS.timeout) and FLAGS.timeout > 0):
        fail(f"--timeout={FLAGS.timeout} must be a finite number > 0")
    out = None
    if FLAGS.out:
        from vma_tf.errors import WorkdirError
        from vma_tf.workdir import check_output_file

        try:
            out = check_output_file("--out", FLAGS.out)
        except WorkdirError as e:
            fail(str(e))
    inputs = _gather_inputs(FLAGS.signature)

    from vma_tf import serving_client

    if FLAGS.print_request:
        try:
            body = serving_client.rest_request_body(FLAGS.signature, inputs)
        except serving_client.ServingError as e:
            fail(str(e))
        print(json.dumps(body))
        return
    try:
        outputs = serving_client.predict(
            FLAGS.url,
            FLAGS.signature,
            inputs,
            model_name=FLAGS.model_name,
            version=FLAGS.model_version,
            timeout=FLAGS.timeout,
        )
    except serving_client.ServingError as e:
        fail(str(e))
    for name in sorted(outputs):
        print(_summary(name, outputs[name]))
    if out is not None:
        import numpy as np

        tmp = out.with_name(f".{out.name}.tmp.npz")
        try:
            np.savez(tmp, **outputs)
            os.replace(tmp, out)
        except OSError as e:
            tmp.unlink(missing_ok=True)
            fail(f"--out={FLAGS.out}: cannot write ({e.strerror})")
        print(f"wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
