"""Export and serving: TF Serving layout, fresh-process reload, REST/gRPC
client round trips, in-graph input validation, the two launchers."""

import io
import json
import os
import pathlib
import shutil
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request

import numpy as np
import pytest
import tensorflow as tf
from helpers import free_ports, run_launcher

from vma_tf import configs, estimators, experiment, export, serving_client, training
from vma_tf.classification import address_class_probs
from vma_tf.data.experiments import make_data
from vma_tf.experiment import load_run

# `make test` (--dist loadgroup): one xdist worker runs this whole file, so its
# module-scoped fixtures are built once.
pytestmark = pytest.mark.xdist_group("test_export")

REPO = pathlib.Path(__file__).resolve().parents[1]
SEED = [3, 4]
K = 5
NUM = 3
TOP = 2
PRESETS = ("mnist_recall", "omniglot_fewshot")


def tiny(preset, **overrides):
    values = dict(
        steps=4,
        log_every=2,
        eval_every=4,
        checkpoint_every=4,
        eval_batches=1,
        jit=False,
    )
    if preset.startswith("omniglot"):
        values.update(
            channels=8, batch_classes=2, targets_per_class=2, memory_per_class=2
        )
    else:
        values.update(memory_size=8, batch_size=8)
    if preset == "mnist_recall":
        values["eval_memory_size"] = 16
    values.update(overrides)
    return configs.override(configs.get_preset(preset), **values)


def signature_inputs(x, memory, labels):
    """The inputs of every signature of an episodic VMA export."""
    return {
        "log_likelihood": {
            "x": x,
            "memory": memory,
            "num_samples": np.int32(K),
            "seed": np.array(SEED, np.int32),
        },
        "address": {"x": x, "memory": memory, "k": np.int32(TOP)},
        "sample": {
            "memory": memory,
            "num": np.int32(NUM),
            "seed": np.array(SEED, np.int32),
        },
        "classify": {"x": x, "memory": memory, "memory_labels": labels},
    }


def in_process(model, inputs):
    """The same quantities from the vma_tf model object (eager)."""
    x, memory = inputs["address"]["x"], inputs["address"]["memory"]
    terms = model.compute_terms(x, memory, K, tf.constant(SEED))
    q_a, _ = model.address_distributions(x, memory)
    probs = q_a.probs_parameter()
    top = tf.math.top_k(probs, TOP)
    seed_a, seed_z = tf.unstack(
        tf.random.experimental.stateless_split(tf.constant(SEED), 2)
    )
    addresses = model.sample_prior_addresses(NUM, memory, seed_a)
    labels = inputs["classify"]["memory_labels"]
    classes, index = np.unique(labels, return_index=True)
    classes = labels[np.sort(index)]  # First-appearance order.
    position = {c: i for i, c in enumerate(classes)}
    class_probs = address_class_probs(
        model, x, memory, [position[c] for c in labels], len(classes)
    ).numpy()
    return {
        "log_likelihood": {
            "nll_bound": -estimators.iwae_bound(terms.log_weights).numpy(),
            "kl_a": terms.kl_a.numpy(),
            "kl_z": terms.kl_z.numpy(),
            "recon": terms.recon.numpy(),
        },
        "address": {
            "probs": probs.numpy(),
            "top_indices": top.indices.numpy(),
            "top_probs": top.values.numpy(),
        },
        "sample": {
            "images": model.sample(addresses, memory, seed_z).numpy(),
            "addresses": addresses.numpy(),
        },
        "classify": {
            "classes": classes,
            "class_probs": class_probs,
            "predicted_label": classes[class_probs.argmax(-1)],
        },
    }


def assert_outputs_equal(got, want, where=""):
    assert set(got) == set(want), where
    for name, value in want.items():
        value = np.asarray(value)
        if value.dtype.kind in "iu":
            np.testing.assert_array_equal(got[name], value, err_msg=f"{where} {name}")
        else:
            np.testing.assert_allclose(
                got[name], value, rtol=1e-5, atol=1e-5, err_msg=f"{where} {name}"
            )


def call(loaded, signature, inputs):
    fn = loaded.signatures[signature]
    args = {k: tf.constant(v) for k, v in inputs.items()}
    return {k: v.numpy() for k, v in fn(**args).items()}


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """Both presets trained briefly and exported (MNIST by the launcher), with
    request inputs and the in-process model's outputs for them."""
    root = tmp_path_factory.mktemp("export")
    runs = {}
    for preset in PRESETS:
        workdir = root / preset
        training.train_and_evaluate(tiny(preset), workdir, progress=False)
        _, model, data, step = load_run(workdir)
        batch = data.make_batch(tf.constant(0, tf.int64))
        x = batch["x"].numpy()[:3].astype(np.float32)
        memory = batch["memory"].numpy().astype(np.float32)
        labels = np.array([7, 3, 7, 9, 3, 9, 1, 1][: len(memory)], np.int32)
        inputs = signature_inputs(x, memory, labels)
        base = root / f"{preset}_serving"
        if preset == "mnist_recall":
            proc = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "launchers.export",
                    f"--workdir={workdir}",
                    f"--export_dir={base}",
                ],
                cwd=REPO,
                capture_output=True,
                text=True,
                timeout=300,
                check=False,
            )
            assert proc.returncode == 0, proc.stderr[-3000:]
            assert f"to {base / str(step)}" in proc.stdout
        else:
            export.export_model(model, data.x_shape, base, step)
        runs[preset] = dict(
            workdir=workdir,
            base=base,
            path=base / str(step),
            step=step,
            x_shape=tuple(data.x_shape),
            inputs=inputs,
            expected=in_process(model, inputs),
        )
    return runs


@pytest.fixture(scope="module")
def loaded(served):
    return {p: tf.saved_model.load(str(served[p]["path"])) for p in PRESETS}


def test_tf_serving_layout_and_signatures(served):
    run = served["mnist_recall"]
    assert run["path"].name == str(run["step"])  # Version = checkpoint step.
    assert (run["path"] / "saved_model.pb").is_file()
    assert (run["path"] / "variables" / "variables.index").is_file()
    assert [p.name for p in run["base"].iterdir()] == [str(run["step"])]  # No tmp.
    # Readable as any new directory is (not mkdtemp's 0700): a server running
    # as another user reads it.
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(run["path"].stat().st_mode) == 0o777 & ~umask
    meta = export.read_metadata(run["path"])
    assert meta["kind"] == "vma" and not meta["learned_memory"]
    assert list(meta["signatures"]) == list(run["inputs"])
    assert meta["signatures"]["classify"]["memory_labels"] == {
        "dtype": "int32",
        "shape": "[|M|]",
    }
    proc = subprocess.run(
        [
            str(pathlib.Path(sys.executable).parent / "saved_model_cli"),
            "show",
            "--all",
            "--dir",
            str(run["path"]),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    for name in ("serving_default", *run["inputs"]):
        assert f"signature_def['{name}']" in proc.stdout
    for line in ("inputs['memory_labels']", "outputs['nll_bound']", "DT_INT32"):
        assert line in proc.stdout


FRESH = r"""
import sys
import numpy as np
import tensorflow as tf
for path, requests, out in zip(*[iter(sys.argv[1:])] * 3):
    loaded = tf.saved_model.load(path)
    requests = np.load(requests, allow_pickle=False)
    results = {}
    for name in sorted({k.split("/")[0] for k in requests.files}):
        args = {k.split("/")[1]: tf.constant(requests[k])
                for k in requests.files if k.startswith(name + "/")}
        for key, value in loaded.signatures[name](**args).items():
            results[f"{name}/{key}"] = value.numpy()
    np.savez(out, **results)
assert "vma_tf" not in sys.modules, "loaded vma_tf"
print("ok")
"""


def test_fresh_process_without_vma_tf_reproduces_the_model(served, tmp_path):
    argv = []
    for preset in PRESETS:
        flat = {
            f"{sig}/{k}": v
            for sig, inputs in served[preset]["inputs"].items()
            for k, v in inputs.items()
        }
        np.savez(tmp_path / f"{preset}_in.npz", **flat)
        argv += [
            str(served[preset]["path"]),
            str(tmp_path / f"{preset}_in.npz"),
            str(tmp_path / f"{preset}_out.npz"),
        ]
    proc = subprocess.run(
        [sys.executable, "-c", FRESH, *argv],
        cwd=tmp_path,  # Not the repo: vma_tf is not importable from here.
        capture_output=True,
        text=True,
        timeout=300,
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
        check=False,
    )
    assert proc.returncode == 0 and "ok" in proc.stdout, proc.stderr[-3000:]
    for preset in PRESETS:
        with np.load(tmp_path / f"{preset}_out.npz") as out:
            for sig, want in served[preset]["expected"].items():
                got = {k.split("/")[1]: out[k] for k in out.files if k.startswith(sig)}
                assert_outputs_equal(got, want, f"{preset} {sig}")
        # Sanity of the numbers themselves.
        expected = served[preset]["expected"]
        np.testing.assert_allclose(expected["address"]["probs"].sum(-1), 1, rtol=1e-5)
        np.testing.assert_allclose(
            expected["classify"]["class_probs"].sum(-1), 1, rtol=1e-5
        )
        images = expected["sample"]["images"]
        assert images.shape == (NUM, *served[preset]["x_shape"])
        assert np.all((images >= 0) & (images <= 1))


class FakeServing:
    """Stands in for `urlopen` of a TF Serving REST predict call: decodes the
    JSON body, feeds it to the loaded signature, encodes the outputs (or the
    error) as TF Serving does."""

    def __init__(self, loaded):
        self.loaded = loaded
        self.urls = []

    def __call__(self, request, timeout=None):
        self.urls.append(request.full_url)
        body = json.loads(request.data.decode())
        fn = self.loaded.signatures[body["signature_name"]]
        specs = fn.structured_input_signature[1]
        args = {
            k: tf.constant(v, dtype=specs[k].dtype) for k, v in body["inputs"].items()
        }
        try:
            outputs = {k: v.numpy().tolist() for k, v in fn(**args).items()}
        except tf.errors.InvalidArgumentError as e:
            error = json.dumps({"error": e.message}).encode()
            raise urllib.error.HTTPError(
                request.full_url, 400, "Bad Request", {}, io.BytesIO(error)
            )
        if len(outputs) == 1:  # TF Serving leaves a lone output unnamed.
            (outputs,) = outputs.values()
        return io.BytesIO(json.dumps({"outputs": outputs}).encode())


@pytest.mark.parametrize("preset", PRESETS)
def test_rest_json_round_trip_of_every_signature(served, loaded, preset, monkeypatch):
    run, fake = served[preset], FakeServing(loaded[preset])
    monkeypatch.setattr(urllib.request, "urlopen", fake)
    for sig, inputs in run["inputs"].items():
        body = json.loads(json.dumps(serving_client.rest_request_body(sig, inputs)))
        assert body["signature_name"] == sig and set(body["inputs"]) == set(inputs)
        got = serving_client.predict_rest("http://h:8501", sig, inputs, version=7)
        assert_outputs_equal(got, run["expected"][sig], sig)
        assert_outputs_equal(got, call(loaded[preset], sig, inputs), sig)
    assert fake.urls[0] == "http://h:8501/v1/models/vma/versions/7:predict"
    bad = dict(run["inputs"]["log_likelihood"], num_samples=1)
    with pytest.raises(
        serving_client.ServingError, match="num_samples must be in \\[2, 10000\\]"
    ):
        serving_client.predict("http://h:8501", "log_likelihood", bad)


X_MNIST = r"x must be float32 \[N, 784\]"
MEMORY_MNIST = r"memory must be float32 \[\|M\|, 784\]"
LABELS = r"memory_labels must be int32 \[\|M\|\]"
K_RANGE = r"k must be in \[1, \|M\|\]"
OMNI, MNIST = "omniglot_fewshot", "mnist_recall"

# (preset, signature, input, its bad value from the classify inputs, message)
BAD_INPUTS = [
    (MNIST, "log_likelihood", "x", lambda m: m["x"][0], X_MNIST),
    (MNIST, "address", "x", lambda m: m["x"][:, :100], X_MNIST),
    (
        OMNI,
        "classify",
        "x",
        lambda m: np.zeros([2, 28, 28, 1], np.float32),
        r"x must be float32 \[N, 26, 26, 1\]",
    ),
    (MNIST, "address", "x", lambda m: 2 * m["x"], r"x values must lie in \[0, 1\]"),
    (
        MNIST,
        "log_likelihood",
        "x",
        lambda m: np.full_like(m["x"], np.nan),
        r"x values must lie in \[0, 1\]",
    ),
    (
        OMNI,
        "sample",
        "memory",
        lambda m: 2 * m["memory"],
        r"memory values must lie in \[0, 1\]",
    ),
    (OMNI, "classify", "x", lambda m: m["x"][:0], r"x must not be empty \(N >= 1"),
    (MNIST, "log_likelihood", "x", lambda m: m["x"][:0], r"x must not be empty"),
    (MNIST, "log_likelihood", "memory", lambda m: m["memory"][:0], "must not be empty"),
    (OMNI, "sample", "memory", lambda m: m["memory"][:0], "memory must not be empty"),
    (MNIST, "sample", "memory", lambda m: m["memory"][None], MEMORY_MNIST),
    (MNIST, "classify", "memory_labels", lambda m: m["memory_labels"][:-1], LABELS),
    (MNIST, "classify", "memory_labels", lambda m: np.int32(1), LABELS),
    (
        MNIST,
        "log_likelihood",
        "num_samples",
        lambda m: np.int32(1),
        r"num_samples must be in \[2, 10000\]",
    ),
    (MNIST, "address", "k", lambda m: np.int32(9), K_RANGE),
    (OMNI, "address", "k", lambda m: np.int32(0), K_RANGE),
    (MNIST, "sample", "num", lambda m: np.int32(0), r"num must be in \[1, 10000\]"),
    (
        MNIST,
        "sample",
        "seed",
        lambda m: np.array([1, 2, 3], np.int32),
        r"seed must be int32 \[2\]",
    ),
]


@pytest.mark.parametrize("preset,sig,name,bad,message", BAD_INPUTS)
def test_bad_inputs_raise_invalid_argument(
    served, loaded, preset, sig, name, bad, message
):
    run = served[preset]
    inputs = dict(run["inputs"][sig])
    inputs[name] = bad(run["inputs"]["classify"])
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
        call(loaded[preset], sig, inputs)


def test_export_launcher_refuses_bad_flags_with_one_line(served, tmp_path):
    run = served["mnist_recall"]
    before = sorted(p.name for p in run["base"].iterdir())
    run_flags = [f"--workdir={run['workdir']}", f"--export_dir={run['base']}"]
    other = [f"--workdir={tmp_path}", f"--export_dir={tmp_path / 'e'}"]
    cases = [
        (run_flags, "already exists"),
        ([*run_flags, f"--version={run['step']}"], "refusing to overwrite"),
        ([*run_flags, "--version=0"], "--version=0 must be >= 1"),
        (run_flags[:1], "--export_dir is required"),
        (other, "has no config.json"),
        (other[1:], "--workdir is required"),
    ]
    for args, message in cases:
        proc = run_launcher("export", args)
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        assert proc.returncode == 2 and len(lines) == 1, proc.stderr[-2000:]
        assert message in lines[0], lines
    assert sorted(p.name for p in run["base"].iterdir()) == before
    assert not (tmp_path / "e").exists()
    # The step is read from the checkpoint files themselves: a run whose
    # `checkpoint` state file is gone (or names absolute paths, as
    # `checkpointing.repair_state` writes it) still has its checkpoint.
    copy = tmp_path / "copy"
    shutil.copytree(run["workdir"], copy)
    (copy / "checkpoints" / "checkpoint").unlink()
    proc = run_launcher("export", [f"--workdir={copy}", f"--export_dir={run['base']}"])
    assert proc.returncode == 2 and "already exists" in proc.stderr, proc.stderr
    shutil.rmtree(copy / "checkpoints")
    proc = run_launcher("export", [f"--workdir={copy}", f"--export_dir={run['base']}"])
    assert proc.returncode == 2 and "has no checkpoint yet" in proc.stderr


def test_query_launcher_request_body_feeds_the_signature(served, loaded, tmp_path):
    from PIL import Image

    run = served["mnist_recall"]
    inputs = run["inputs"]["classify"]
    np.save(tmp_path / "memory.npy", inputs["memory"])
    np.savez(tmp_path / "labels.npz", memory_labels=inputs["memory_labels"])
    pngs = []
    for i, image in enumerate(inputs["x"]):
        pngs.append(tmp_path / f"x{i}.png")
        pixels = (image.reshape(28, 28) * 255).round().astype(np.uint8)
        Image.fromarray(pixels).save(pngs[-1])
    proc = run_launcher(
        "query",
        [
            "--signature=classify",
            "--x=" + ",".join(map(str, pngs)),
            "--flatten",
            f"--memory={tmp_path / 'memory.npy'}",
            f"--memory_labels={tmp_path / 'labels.npz'}",
            "--print_request",
        ],
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    body = json.loads(proc.stdout)
    assert body["signature_name"] == "classify"
    np.testing.assert_array_equal(np.array(body["inputs"]["x"]), inputs["x"])
    fn = loaded["mnist_recall"].signatures["classify"]
    specs = fn.structured_input_signature[1]
    got = fn(**{k: tf.constant(v, specs[k].dtype) for k, v in body["inputs"].items()})
    assert_outputs_equal(
        {k: v.numpy() for k, v in got.items()}, run["expected"]["classify"]
    )
    # Scalars default per signature; only the signature's inputs are sent.
    proc = run_launcher(
        "query",
        [
            "--signature=sample",
            f"--memory={tmp_path / 'memory.npy'}",
            f"--x={tmp_path / 'memory.npy'}",
            "--num=3",
            "--seed=3,4",
            "--print_request",
        ],
    )
    body = json.loads(proc.stdout)["inputs"]
    assert sorted(body) == ["memory", "num", "seed"] and body["seed"] == [3, 4]
    # --inputs fills what no flag gives; a flag given overrides it.
    np.savez(tmp_path / "in.npz", x=inputs["x"], memory=inputs["memory"], k=5)
    for extra, k in (([], 5), (["--k=3"], 3)):
        args = [f"--inputs={tmp_path / 'in.npz'}", "--signature=address", *extra]
        proc = run_launcher("query", [*args, "--print_request"])
        assert json.loads(proc.stdout)["inputs"]["k"] == k, (extra, proc.stderr)


def test_query_launcher_invert_and_flatten_images(tmp_path):
    """Image inputs: grayscale / 255; `--invert` gives 1 - that (dark strokes
    on white become ink = 1); `--flatten` gives `[N, H * W]`."""
    from PIL import Image

    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(2, 3, 4)).astype(np.uint8)
    pngs = [tmp_path / f"x{i}.png" for i in range(2)]
    for image, path in zip(pixels, pngs):
        Image.fromarray(image).save(path)
    np.save(tmp_path / "memory.npy", np.zeros([2, 12], np.float32))
    bodies = {}
    for extra in ([], ["--invert"], ["--invert", "--flatten"]):
        proc = run_launcher(
            "query",
            [
                "--signature=address",
                "--x=" + ",".join(map(str, pngs)),
                f"--memory={tmp_path / 'memory.npy'}",
                "--print_request",
                *extra,
            ],
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
        bodies[" ".join(extra)] = np.array(json.loads(proc.stdout)["inputs"]["x"])
    gray = pixels[..., None] / 255.0
    np.testing.assert_allclose(bodies[""], gray, rtol=0, atol=1e-6)
    np.testing.assert_allclose(bodies["--invert"], 1.0 - gray, rtol=0, atol=1e-6)
    np.testing.assert_allclose(
        bodies["--invert --flatten"], (1.0 - gray).reshape(2, 12), rtol=0, atol=1e-6
    )


def test_query_launcher_reads_16_bit_and_colour_images(tmp_path):
    """A 16-bit grayscale PNG is scaled by 65535 (an 8-bit conversion clips
    it to 0 or 1), and an opaque RGBA one reads as its luminance / 255."""
    from PIL import Image

    deep = (np.arange(12).reshape(3, 4) * 5000).astype(np.uint16)
    Image.fromarray(deep).save(tmp_path / "deep.png")
    colour = np.full((3, 4, 4), 255, np.uint8)
    colour[..., :3] = np.arange(12, dtype=np.uint8).reshape(3, 4, 1) * 20
    Image.fromarray(colour, "RGBA").save(tmp_path / "colour.png")
    np.save(tmp_path / "memory.npy", np.zeros([2, 12], np.float32))
    for name, want in (("deep", deep / 65535.0), ("colour", colour[..., 0] / 255.0)):
        proc = run_launcher(
            "query",
            [
                "--signature=address",
                f"--x={tmp_path / name}.png",
                f"--memory={tmp_path / 'memory.npy'}",
                "--print_request",
            ],
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
        got = np.array(json.loads(proc.stdout)["inputs"]["x"])
        np.testing.assert_allclose(got, want[None, ..., None], rtol=0, atol=1e-6)


def test_query_launcher_bad_flags_give_one_line(tmp_path):
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object))
    np.savez(tmp_path / "obj.npz", x=np.array([{"a": 1}], dtype=object))
    np.save(tmp_path / "x.npy", np.zeros([1, 784], np.float32))
    x = f"--x={tmp_path / 'x.npy'}"
    np.save(tmp_path / "text.npy", np.array([["a"] * 784]))
    from PIL import Image

    see_through = np.full((2, 3, 4), 255, np.uint8)
    see_through[1, 2, 3] = 0
    Image.fromarray(see_through, "RGBA").save(tmp_path / "alpha.png")
    cases = [
        (["--signature=classify"], "--url is required"),
        (["--print_request", f"--x={tmp_path / 'text.npy'}"], "'x' must hold numbers"),
        (
            ["--print_request", f"--x={tmp_path / 'alpha.png'}", "--flatten"],
            "alpha.png has transparent pixels",
        ),
        (["--url=localhost:8501"], "must start with http://"),
        (["--url=http://h:1", f"--x={tmp_path / 'obj.npy'}"], "cannot read"),
        (["--url=http://h:1", f"--x={tmp_path / 'obj.npz'}"], "cannot read"),
        (["--url=http://h:1", f"--x={tmp_path / 'none.npy'}"], "no such file"),
        (["--print_request", x, "--seed=3000000000,1"], "'seed' must lie in"),
        (
            ["--print_request", "--signature=classify", x, f"--memory={x[4:]}"]
            + ["--memory_labels=7,4294967303"],
            "'memory_labels' must lie in the int32 range",
        ),
        (
            ["--print_request", "--signature=classify", x, f"--memory={x[4:]}"]
            + [f"--memory_labels=7,{2**64}"],
            "must lie in the int32 range",
        ),
        (["--url=http://h:1", x, "--timeout=nan"], "--timeout=nan must be a finite"),
        (["--url=http://h:1", x, "--timeout=inf"], "--timeout=inf must be a finite"),
        (
            ["--url=http://h:1", x, f"--out={tmp_path / 'no' / 'out.npz'}"],
            f"{tmp_path / 'no'} does not exist",
        ),
        (["--url=http://h:1", x, f"--out={tmp_path}"], "is a directory, not a file"),
        (["--url=http://h:1", "--signature=classify", x], "needs --memory, --memory"),
        (["--url=http://h:1", x, "--seed=1"], "--seed=1 must be two integers"),
        (
            ["--url=http://127.0.0.1:9", x, "--timeout=5"],
            "cannot reach http://127.0.0.1:9/v1/models/vma:predict",
        ),
    ]
    for args, message in cases:
        proc = run_launcher("query", args, cwd=REPO)
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        assert proc.returncode == 2 and len(lines) == 1, (args, proc.stderr[-2000:])
        assert message in lines[0], lines


def test_integer_inputs_are_never_silently_changed():
    """Labels 2**32 + 7 and 7 would be one class after an int32 cast, and
    1.7 would be 1: the client refuses both in one line."""
    ok = serving_client.as_inputs({"memory_labels": np.array([7, 2**31 - 1])})
    assert ok["memory_labels"].dtype == np.int32
    bad = [
        ({"memory_labels": np.array([7, 2**32 + 7])}, "'memory_labels' must lie in"),
        ({"memory_labels": [0.0, 1.7]}, "'memory_labels' must hold integers"),
        ({"k": 3_000_000_000}, "'k' must lie in the int32 range"),
        ({"seed": [-(2**31) - 1, 0]}, "'seed' must lie in"),
    ]
    for inputs, message in bad:
        with pytest.raises(serving_client.ServingError, match=message):
            serving_client.predict("http://h:8501", "classify", inputs)


def test_grpc_channel_has_no_message_size_limit(served, loaded, monkeypatch):
    """gRPC's default 4 MiB receive limit would refuse a large reply (sampled
    images, q(a|x) over a large memory) that REST takes: the client's channel
    lifts both limits."""
    grpc = pytest.importorskip("grpc")
    apis = pytest.importorskip("tensorflow_serving.apis.prediction_service_pb2_grpc")
    opened = []

    class Channel:
        def close(self):
            pass

    def insecure_channel(target, options=()):
        opened.append((target, dict(options)))
        return Channel()

    monkeypatch.setattr(grpc, "insecure_channel", insecure_channel)
    monkeypatch.setattr(apis, "PredictionServiceStub", FakeStub(loaded["mnist_recall"]))
    inputs = served["mnist_recall"]["inputs"]["sample"]
    serving_client.predict("grpc://127.0.0.1:9", "sample", inputs)
    assert opened == [
        (
            "127.0.0.1:9",
            {
                "grpc.max_send_message_length": -1,
                "grpc.max_receive_message_length": -1,
            },
        )
    ]


def test_grpc_without_the_package_is_one_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorflow_serving.apis", None)
    with pytest.raises(serving_client.ServingError, match="tensorflow-serving-api"):
        serving_client.predict("grpc://127.0.0.1:9", "sample", {"num": 1})
    with pytest.raises(serving_client.ServingError, match="must start with"):
        serving_client.predict("ftp://h", "sample", {"num": 1})


@pytest.mark.parametrize("preset", ["mnist_learned", "mnist_vae"])
def test_learned_memory_and_vae_exports(tmp_path, preset, monkeypatch):
    config = tiny(preset, batch_size=4)
    data = make_data(config)
    model = experiment.build_model(
        config, data.x_shape, data.make_batch(tf.constant(0, tf.int64))
    )
    path = export.export_model(model, data.x_shape, tmp_path, 1)
    loaded_model = tf.saved_model.load(str(path))
    sigs = loaded_model.signatures
    x = data.make_batch(tf.constant(1, tf.int64))["x"][:2]
    ll = dict(x=x, num_samples=tf.constant(K), seed=tf.constant(SEED))
    got = sigs["log_likelihood"](**ll)
    want = model.compute_terms(x, None, K, tf.constant(SEED))
    np.testing.assert_allclose(
        got["nll_bound"], -estimators.iwae_bound(want.log_weights), rtol=1e-5
    )
    sample = sigs["sample"](num=tf.constant(NUM), seed=tf.constant(SEED))
    assert sample["images"].shape == (NUM, 784)
    if preset == "mnist_vae":
        assert set(sigs) == {"serving_default", "log_likelihood", "sample"}
        np.testing.assert_array_equal(got["kl_a"], 0.0)
        np.testing.assert_allclose(
            sample["images"], model.sample(NUM, tf.constant(SEED)), rtol=1e-5, atol=1e-6
        )
        # Over REST its lone output comes back unnamed, and is named.
        monkeypatch.setattr(urllib.request, "urlopen", FakeServing(loaded_model))
        inputs = {"num": NUM, "seed": SEED}
        rest = serving_client.predict("http://h:8501", "sample", inputs)
        assert_outputs_equal(rest, {k: v.numpy() for k, v in sample.items()})
        return
    assert set(sigs) == {
        "serving_default",
        "log_likelihood",
        "address",
        "sample",
        "log_likelihood_with_memory",
        "address_with_memory",
        "sample_with_memory",
        "classify",
    }
    learned = model.memory.memory.numpy()  # [|M|, 256] entries, not images.
    with_memory = sigs["log_likelihood_with_memory"](memory=learned, **ll)
    np.testing.assert_allclose(with_memory["nll_bound"], got["nll_bound"], rtol=1e-6)
    probs = sigs["address"](x=x, k=tf.constant(TOP))["probs"]
    assert probs.shape == (2, 8)
    q_a, _ = model.address_distributions(x, None)
    np.testing.assert_allclose(probs, q_a.probs_parameter(), rtol=1e-5, atol=1e-7)
    seed_a, seed_z = tf.unstack(
        tf.random.experimental.stateless_split(tf.constant(SEED), 2)
    )
    addresses = model.sample_prior_addresses(NUM, None, seed_a)
    np.testing.assert_array_equal(sample["addresses"], addresses)
    np.testing.assert_allclose(
        sample["images"], model.sample(addresses, None, seed_z), rtol=1e-5, atol=1e-6
    )
    with pytest.raises(tf.errors.InvalidArgumentError, match="memory must be float32"):
        sigs["address_with_memory"](x=x, memory=x, k=tf.constant(TOP))
    with pytest.raises(tf.errors.InvalidArgumentError, match="memory values must be"):
        sigs["log_likelihood_with_memory"](memory=learned * np.nan, **ll)


def test_served_large_memory_samples_as_compute_terms(served, tmp_path, monkeypatch):
    """A signature's memory has no static size, so the sampler is chosen at
    run time: above `HIERARCHICAL_MIN_CATEGORIES` entries the served draws are
    the two-stage ones of `compute_terms` (lowered to 4 here, groups of 4)."""
    from vma_tf.modeling import sampling

    run = served["mnist_recall"]
    _, model, data, _ = load_run(run["workdir"])
    inputs = run["inputs"]
    memory = inputs["sample"]["memory"]  # 8 entries: 2 groups of 4.
    monkeypatch.setattr(sampling, "HIERARCHICAL_MIN_CATEGORIES", 4)
    monkeypatch.setattr(sampling, "HIERARCHICAL_GROUP_SIZE", 4)
    path = export.export_model(model, data.x_shape, tmp_path, 1)
    exported = tf.saved_model.load(str(path))
    expected = in_process(model, inputs)
    for sig in ("log_likelihood", "sample"):
        assert_outputs_equal(call(exported, sig, inputs[sig]), expected[sig], sig)
    # Not the one-stage draws: those give other addresses, other bounds.
    monkeypatch.setattr(sampling, "HIERARCHICAL_MIN_CATEGORIES", 1 << 30)
    one_stage = in_process(model, inputs)["log_likelihood"]["nll_bound"]
    assert len(memory) == 8
    assert not np.allclose(one_stage, expected["log_likelihood"]["nll_bound"])


@pytest.mark.parametrize(("preset", "rows"), [(PRESETS[0], 1), (PRESETS[1], 7)])
def test_served_bound_in_chunks_equals_compute_terms(
    served, preset, rows, tmp_path, monkeypatch
):
    """`log_likelihood` streams its K * N rows in chunks of `CHUNK_ROWS`
    (lowered here: N = 3 queries, so chunks of 1 sample, or of 2 with the last
    one's second sample past K = 5 masked out); the numbers are those of one
    `compute_terms` draw of K samples."""
    from vma_tf.export import signatures

    run = served[preset]
    _, model, data, _ = load_run(run["workdir"])
    monkeypatch.setattr(signatures, "CHUNK_ROWS", rows)
    exported = tf.saved_model.load(
        str(export.export_model(model, data.x_shape, tmp_path, 1))
    )
    inputs = run["inputs"]["log_likelihood"]
    assert len(inputs["x"]) == 3 and inputs["num_samples"] == K == 5
    got = call(exported, "log_likelihood", inputs)
    assert_outputs_equal(got, run["expected"]["log_likelihood"], preset)


def test_served_bound_equals_compute_terms_above_k_n_entries(served, loaded):
    """With more entries than samples (|M| = 8 > K N = 5) `compute_terms`
    runs the z part per sample, on the addressed entries only; the served
    graph (|M| unknown when built) runs it per entry: the same numbers."""
    run = served[MNIST]
    _, model, _, _ = load_run(run["workdir"])
    inputs = dict(run["inputs"]["log_likelihood"], x=run["inputs"]["address"]["x"][:1])
    assert len(inputs["memory"]) > K * len(inputs["x"])
    terms = model.compute_terms(inputs["x"], inputs["memory"], K, tf.constant(SEED))
    got = call(loaded[MNIST], "log_likelihood", inputs)
    want = {
        "nll_bound": -estimators.iwae_bound(terms.log_weights).numpy(),
        "kl_a": terms.kl_a.numpy(),
        "kl_z": terms.kl_z.numpy(),
        "recon": terms.recon.numpy(),
    }
    assert_outputs_equal(got, want, "per sample")


def test_soft_attention_with_learned_memory_serves_its_memory(tmp_path, monkeypatch):
    """Its export reads the learned memory (no `memory` input), as a VMA's
    does; `*_with_memory` take another; REST names the lone `images`."""
    config = configs.override(
        configs.get_preset("omniglot_learned"),
        kind="soft_attention",
        channels=8,
        memory_size=8,
        batch_size=4,
        jit=False,
    )
    data = make_data(config)
    model = experiment.build_model(
        config, data.x_shape, data.make_batch(tf.constant(0, tf.int64))
    )
    path = export.export_model(model, data.x_shape, tmp_path, 1)
    meta = export.read_metadata(path)
    assert meta["kind"] == "soft_attention" and meta["learned_memory"]
    assert {k: sorted(v) for k, v in meta["signatures"].items()} == {
        "log_likelihood": ["num_samples", "seed", "x"],
        "sample": ["num", "seed"],
        "log_likelihood_with_memory": ["memory", "num_samples", "seed", "x"],
        "sample_with_memory": ["memory", "num", "seed"],
    }
    loaded_model = tf.saved_model.load(str(path))
    x = data.make_batch(tf.constant(1, tf.int64))["x"][:2].numpy()
    ll = dict(x=x, num_samples=np.int32(K), seed=np.array(SEED, np.int32))
    want = model.compute_terms(x, None, K, tf.constant(SEED))
    for sig, extra in (
        ("log_likelihood", {}),
        ("log_likelihood_with_memory", {"memory": model.memory.memory.numpy()}),
    ):
        got = call(loaded_model, sig, {**ll, **extra})
        np.testing.assert_allclose(
            got["nll_bound"], -estimators.iwae_bound(want.log_weights), rtol=1e-5
        )
    monkeypatch.setattr(urllib.request, "urlopen", FakeServing(loaded_model))
    draw = {"num": NUM, "seed": SEED}
    images = model.sample(NUM, None, tf.constant(SEED)).numpy()
    got = serving_client.predict("http://h:8501", "sample", draw)
    assert_outputs_equal(got, {"images": images})
    other = np.zeros_like(model.memory.memory.numpy())
    got = serving_client.predict(
        "http://h:8501", "sample_with_memory", {**draw, "memory": other}
    )
    assert set(got) == {"images"} and got["images"].shape == images.shape
    assert not np.allclose(got["images"], images)


class FakeStub:
    """Stands in for `PredictionServiceStub`: decodes the `PredictRequest`,
    feeds the loaded signature, encodes a `PredictResponse`."""

    def __init__(self, loaded):
        self.loaded = loaded
        self.requests = []

    def __call__(self, channel):
        return self

    def Predict(self, request, timeout=None):
        from tensorflow_serving.apis import predict_pb2

        self.requests.append(request)
        fn = self.loaded.signatures[request.model_spec.signature_name]
        args = {k: tf.make_ndarray(v) for k, v in request.inputs.items()}
        response = predict_pb2.PredictResponse()
        for key, value in fn(**args).items():
            response.outputs[key].CopyFrom(tf.make_tensor_proto(value.numpy()))
        return response


def test_grpc_request_and_response_round_trip(served, loaded, monkeypatch):
    apis = pytest.importorskip("tensorflow_serving.apis.prediction_service_pb2_grpc")
    run, stub = served["omniglot_fewshot"], FakeStub(loaded["omniglot_fewshot"])
    monkeypatch.setattr(apis, "PredictionServiceStub", stub)
    for sig, inputs in run["inputs"].items():
        got = serving_client.predict("grpc://127.0.0.1:9", sig, inputs, version=3)
        assert_outputs_equal(got, run["expected"][sig], sig)
    spec = stub.requests[0].model_spec
    assert (spec.name, spec.version.value) == ("vma", 3)


def test_rest_client_does_not_import_tensorflow():
    code = "import sys, vma_tf.serving_client; print('tensorflow' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.stdout.strip() == "False", out.stderr[-2000:]


@pytest.mark.skipif(
    shutil.which("tensorflow_model_server") is None,
    reason="tensorflow_model_server is not on PATH (not installable here; "
    "see README 'Export and serving' for the docker image)",
)
def test_real_tensorflow_model_server(served, tmp_path):
    run = served["mnist_recall"]
    rest, grpc_port = free_ports(2)
    with (tmp_path / "server.log").open("w") as log:  # The server keeps its fd.
        server = subprocess.Popen(
            [
                "tensorflow_model_server",
                f"--port={grpc_port}",
                f"--rest_api_port={rest}",
                "--model_name=vma",
                f"--model_base_path={run['base']}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{rest}"
    try:
        deadline = time.time() + 120
        while True:
            assert server.poll() is None, (tmp_path / "server.log").read_text()
            try:
                with urllib.request.urlopen(f"{url}/v1/models/vma", timeout=5) as r:
                    states = [v["state"] for v in json.load(r)["model_version_status"]]
                if "AVAILABLE" in states:
                    break
            except (urllib.error.URLError, OSError, KeyError, ValueError):
                pass
            assert time.time() < deadline, (tmp_path / "server.log").read_text()
            time.sleep(0.5)
        urls = [url]
        try:
            import tensorflow_serving.apis  # noqa: F401

            urls.append(f"grpc://127.0.0.1:{grpc_port}")
        except ImportError:
            pass
        for target in urls:
            for sig, inputs in run["inputs"].items():
                got = serving_client.predict(target, sig, inputs)
                assert_outputs_equal(got, run["expected"][sig], f"{target} {sig}")
            default = serving_client.predict(
                target, "serving_default", run["inputs"]["log_likelihood"]
            )
            assert_outputs_equal(default, run["expected"]["log_likelihood"])
            bad = dict(run["inputs"]["address"], k=np.int32(99))
            with pytest.raises(serving_client.ServingError, match="k must be in"):
                serving_client.predict(target, "address", bad)
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
