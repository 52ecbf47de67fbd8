"""Export a trained model as a SavedModel for TF Serving, memory as an input.

Memory is non-parametric: a served VMA accepts any memory set per request
(few-shot generation and classification as a service). `export_run(workdir,
export_dir)` restores a run's newest checkpoint and writes

  EXPORT_DIR/<version>/saved_model.pb
  EXPORT_DIR/<version>/variables/
  EXPORT_DIR/<version>/assets.extra/vma_export.json   (what was exported)

the layout `tensorflow_model_server --model_base_path=EXPORT_DIR` serves
(version defaults to the checkpoint's step). The SavedModel is written with
`keras.export.ExportArchive`; loading it needs TensorFlow only
(`tf.saved_model.load(path).signatures[name](**inputs)`), no vma_tf code.

Signatures (N queries, |M| memory entries, `*x` the shape of one example:
`784` for MNIST, `26, 26, 1` / `28, 28, 1` for Omniglot; `*m` the shape of one
memory entry: `*x` for episodic memory, the learned entry shape otherwise):

  log_likelihood (= serving_default)
      x float32 `[N, *x]`, memory float32 `[|M|, *m]`, num_samples int32 `[]`,
      seed int32 `[2]`
      -> nll_bound `[N]` (-L_K, nats), kl_a `[N]`, kl_z `[N]`, recon `[N]`
  address
      x, memory, k int32 `[]`
      -> probs `[N, |M|]` (q(a|x)), top_indices int32 `[N, k]`,
         top_probs `[N, k]`
  sample
      memory, num int32 `[]`, seed int32 `[2]`
      -> images `[num, *x]` (Bernoulli means of p(x|z, m_a), a ~ p(a),
         z ~ p(z|m_a)), addresses int32 `[num]`
  classify
      x, memory, memory_labels int32 `[|M|]` (any integer ids)
      -> classes int32 `[C]` (the distinct labels, in order of first
         appearance), class_probs `[N, C]` (q(a|x) summed per label),
         predicted_label int32 `[N]`

Learned-memory models: `log_likelihood`, `address` and `sample` use the
learned memory and have no `memory` input; `log_likelihood_with_memory`,
`address_with_memory` and `sample_with_memory` take a `memory` of entries of
the learned entry shape instead, and `classify` always takes one. The VAE
baseline exports `log_likelihood` (x, num_samples, seed) and `sample` (num,
seed; images only); the soft-attention baseline exports `log_likelihood` and
`sample` (images only) with a `memory` input. Their `kl_a` is 0.

Every input is validated inside the graph: a wrong rank or example size, an
empty batch or memory, pixel values outside [0, 1], `memory_labels` not matching the
memory, `num_samples` outside [2, 10000], `k` outside [1, |M|], `num` outside
[1, 10000] or a seed that is not 2 integers raise `InvalidArgumentError` with
a message naming the input.
Same inputs and seed => same outputs (stateless Philox noise).
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import tempfile

import keras
import tensorflow as tf

from vma_tf import estimators
from vma_tf.configs import ConfigError
from vma_tf.modeling.models import VAE, VMA, SoftAttentionVAE

EXPORT_METADATA = "assets.extra/vma_export.json"
# Upper bound of `num_samples` and `num` per request (bounds the work).
MAX_DRAWS = 10_000


class ExportError(ConfigError):
    """The export cannot be written (e.g. the version exists). One line."""


def _fmt(shape) -> str:
    return ", ".join(str(s) for s in shape)


class _Validator:
    """In-graph input checks that report the first failure by its message.

    Each check is a `tf.debugging.Assert`, chained to the previous one by a
    control dependency. No other kernel may fail on a bad input first (TF
    may run independent ops in any order): every condition is computed from
    padded shapes, and each validated tensor is passed on through a
    `tf.cond` that substitutes a harmless well-formed value when its check
    fails (the request fails by the assert anyway).
    """

    def __init__(self):
        self._last = None

    def check(self, condition, message: str, *data) -> None:
        deps = [] if self._last is None else [self._last]
        with tf.control_dependencies(deps):
            self._last = tf.debugging.Assert(
                condition, [message, *data], summarize=8, name="validate"
            )

    def done(self, t):
        """`t` with a control dependency on every check so far."""
        with tf.control_dependencies([self._last]):
            return tf.identity(t)

    @staticmethod
    def padded_shape(t, length: int):
        """`tf.shape(t)` padded with -1 (or cut) to exactly `length` entries."""
        shape = tf.concat([tf.shape(t), -tf.ones([length], tf.int32)], 0)
        return shape[:length]

    def guarded(self, ok, t, default, static_shape):
        """`t` if `ok` else `default()`, after the checks, with `static_shape`."""
        t = self.done(t)
        # Both branches wait for the checks: a failing check must stop the
        # substitute from reaching the model before the assert reports.
        t = tf.cond(ok, lambda: tf.identity(t), lambda: self.done(default()))
        return tf.ensure_shape(t, static_shape)

    def batch(self, t, name: str, event_shape, unit_range: bool, what: str):
        """Validates a float `[n, *event_shape]` batch (`what == "|M|"`: memory,
        n >= 1); returns it with its static shape set."""
        event_shape = tuple(int(s) for s in event_shape)
        rank = 1 + len(event_shape)
        shape = self.padded_shape(t, rank)
        expect = f"{name} must be float32 [{what}, {_fmt(event_shape)}]"
        ok = tf.logical_and(
            tf.equal(tf.rank(t), rank), tf.reduce_all(tf.equal(shape[1:], event_shape))
        )
        self.check(ok, expect, "got shape", tf.shape(t))
        # Empty batches are refused too: TF's CPU conv kernels return the
        # input shape unchanged for a batch of 0 (a TF bug), so they would
        # fail deep inside the model.
        self.check(shape[0] >= 1, f"{name} must not be empty ({what} >= 1 rows)")
        ok = tf.logical_and(ok, shape[0] >= 1)
        if unit_range:
            self.check(
                tf.reduce_all(tf.logical_and(t >= 0.0, t <= 1.0)),
                f"{name} values must lie in [0, 1] (pixel intensities)",
            )
        else:
            self.check(
                tf.reduce_all(tf.math.is_finite(t)), f"{name} values must be finite"
            )
        return self.guarded(
            ok,
            t,
            lambda: tf.zeros((1,) + event_shape, t.dtype),
            (None,) + event_shape,
        )

    def seed(self, seed):
        ok = tf.logical_and(
            tf.equal(tf.rank(seed), 1), tf.equal(self.padded_shape(seed, 1)[0], 2)
        )
        self.check(ok, "seed must be int32 [2]", "got shape", tf.shape(seed))
        return self.guarded(ok, seed, lambda: tf.zeros([2], seed.dtype), [2])

    def scalar(self, value, low, high, message: str):
        """Checks `low <= value <= high`; returns `value` clipped to the range."""
        self.check(tf.logical_and(value >= low, value <= high), message, "got", value)
        return tf.clip_by_value(self.done(value), low, high)


def _spec(shape, dtype, name):
    return tf.TensorSpec(shape, dtype, name=name)


class ServingFunctions:
    """The signature functions of a built `VMA`, `VAE` or `SoftAttentionVAE`.

    Args:
        model: a built model (variables created, weights restored).
        x_shape: shape of one example, e.g. `(784,)` or `(26, 26, 1)`.

    Attributes:
        signatures: ordered `{name: (fn, input_signature)}`; the first is also
            exported as `serving_default`.
    """

    def __init__(self, model, x_shape):
        self.model = model
        self.x_shape = tuple(int(s) for s in x_shape)
        self.kind = (
            "vma"
            if isinstance(model, VMA)
            else "soft_attention"
            if isinstance(model, SoftAttentionVAE)
            else "vae"
            if isinstance(model, VAE)
            else None
        )
        if self.kind is None:
            raise ExportError(f"cannot export a {type(model).__name__}")
        memory = getattr(model, "memory", None)
        self.learned = bool(memory is not None and memory.learned)
        self.entry_shape = tuple(memory.entry_shape) if memory is not None else None
        self.signatures = self._signatures()

    # -- input specs ------------------------------------------------------------
    def _x(self):
        return _spec(None, tf.float32, "x")

    def _memory(self):
        return _spec(None, tf.float32, "memory")

    def _signatures(self) -> dict:
        x, mem = self._x(), self._memory()
        k = _spec([], tf.int32, "k")
        num_samples = _spec([], tf.int32, "num_samples")
        num = _spec([], tf.int32, "num")
        seed = _spec(None, tf.int32, "seed")
        labels = _spec(None, tf.int32, "memory_labels")
        if self.kind == "vae":
            return {
                "log_likelihood": (
                    lambda x, num_samples, seed: self.log_likelihood(
                        x, None, num_samples, seed
                    ),
                    [x, num_samples, seed],
                ),
                "sample": (
                    lambda num, seed: self.sample(None, num, seed),
                    [num, seed],
                ),
            }
        with_memory = {
            "log_likelihood": (self.log_likelihood, [x, mem, num_samples, seed]),
            "address": (self.address, [x, mem, k]),
            "sample": (self.sample, [mem, num, seed]),
            "classify": (self.classify, [x, mem, labels]),
        }
        if self.kind == "soft_attention":
            return {n: with_memory[n] for n in ("log_likelihood", "sample")}
        if not self.learned:
            return with_memory
        return {
            "log_likelihood": (
                lambda x, num_samples, seed: self.log_likelihood(
                    x, None, num_samples, seed
                ),
                [x, num_samples, seed],
            ),
            "address": (lambda x, k: self.address(x, None, k), [x, k]),
            "sample": (lambda num, seed: self.sample(None, num, seed), [num, seed]),
            "log_likelihood_with_memory": with_memory["log_likelihood"],
            "address_with_memory": with_memory["address"],
            "sample_with_memory": with_memory["sample"],
            "classify": with_memory["classify"],
        }

    # -- validation ---------------------------------------------------------------
    def _inputs(self, v: _Validator, x=None, memory=None):
        if x is not None:
            x = v.batch(x, "x", self.x_shape, True, "N")
        if memory is not None:
            memory = v.batch(
                memory, "memory", self.entry_shape, not self.learned, "|M|"
            )
        return x, memory

    def _memory_size(self, memory):
        if memory is None:
            return tf.constant(self.model.memory.size, tf.int32)
        return tf.shape(memory)[0]

    # -- the signature functions --------------------------------------------------
    def log_likelihood(self, x, memory, num_samples, seed):
        """-L_K and KL diagnostics per query.

        Args:
            x: float32 `[N, *x]` in [0, 1].
            memory: float32 `[|M|, *m]` (None: learned memory / no memory).
            num_samples: int32 scalar K >= 2.
            seed: int32 `[2]` stateless seed.

        Returns:
            Dict of float32 `[N]`: `nll_bound`, `kl_a`, `kl_z`, `recon`.
        """
        v = _Validator()
        x, memory = self._inputs(v, x, memory)
        num_samples = v.scalar(
            num_samples,
            2,
            MAX_DRAWS,
            f"num_samples must be in [2, {MAX_DRAWS}] (K of the bound)",
        )
        seed = v.seed(seed)
        n = tf.shape(x)[0]
        # K is a tensor here, and `compute_terms` takes a Python K: the K
        # copies of x are evaluated as one batch of K * N with K = 1. Its noise
        # is the same Philox stream in the same layout as a `[K, N]` draw, so
        # every number equals `compute_terms(x, memory, K, seed)`.
        multiples = tf.concat(
            [[num_samples], tf.ones([len(self.x_shape)], tf.int32)], 0
        )
        terms = self.model.compute_terms(tf.tile(x, multiples), memory, 1, seed)
        per_sample = lambda t: tf.reshape(t, [num_samples, n])  # [K, N]
        mean = lambda t: tf.reduce_mean(per_sample(t), axis=0)
        return {
            "nll_bound": -estimators.iwae_bound(per_sample(terms.log_weights)),
            "kl_a": terms.kl_a[:n],
            "kl_z": mean(terms.kl_z),
            "recon": mean(terms.recon),
        }

    def address(self, x, memory, k):
        """q(a|x) and its k most probable slots.

        Args:
            x: float32 `[N, *x]`.
            memory: float32 `[|M|, *m]` (None: learned memory).
            k: int32 scalar in [1, |M|].

        Returns:
            `probs` float32 `[N, |M|]`, `top_indices` int32 `[N, k]`,
            `top_probs` float32 `[N, k]`.
        """
        v = _Validator()
        x, memory = self._inputs(v, x, memory)
        size = self._memory_size(memory)
        k = v.scalar(k, 1, size, "k must be in [1, |M|]")
        q_a, _ = self.model.address_distributions(x, memory)
        probs = q_a.probs_parameter()
        top = tf.math.top_k(probs, k)
        return {"probs": probs, "top_indices": top.indices, "top_probs": top.values}

    def sample(self, memory, num, seed):
        """`num` samples of the generative model given the memory.

        Args:
            memory: float32 `[|M|, *m]` (None: learned memory / no memory).
            num: int32 scalar >= 1.
            seed: int32 `[2]`.

        Returns:
            `images` float32 `[num, *x]` Bernoulli means, and for VMA
            `addresses` int32 `[num]` (a ~ p(a)).
        """
        v = _Validator()
        _, memory = self._inputs(v, None, memory)
        num = v.scalar(num, 1, MAX_DRAWS, f"num must be in [1, {MAX_DRAWS}]")
        seed = v.seed(seed)
        if self.kind == "vae":
            return {"images": self.model.sample(num, seed)}
        if self.kind == "soft_attention":
            return {"images": self.model.sample(num, memory, seed)}
        seed_a, seed_z = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
        addresses = tf.cast(
            self.model.sample_prior_addresses(num, memory, seed_a), tf.int32
        )
        images = self.model.sample(addresses, memory, seed_z)
        return {"images": images, "addresses": addresses}

    def classify(self, x, memory, memory_labels):
        """p(c|x) = Σ_{a: label(a) = c} q(a|x) (feed-forward few-shot).

        Args:
            x: float32 `[N, *x]`.
            memory: float32 `[|M|, *m]`.
            memory_labels: int32 `[|M|]`, any integer class ids.

        Returns:
            `classes` int32 `[C]` distinct labels (first-appearance order),
            `class_probs` float32 `[N, C]`, `predicted_label` int32 `[N]`.
        """
        v = _Validator()
        x, memory = self._inputs(v, x, memory)
        size = tf.shape(memory)[0]
        ok = tf.logical_and(
            tf.equal(tf.rank(memory_labels), 1),
            tf.equal(v.padded_shape(memory_labels, 1)[0], size),
        )
        v.check(
            ok,
            "memory_labels must be int32 [|M|], one label per memory entry",
            "got shape",
            tf.shape(memory_labels),
            "|M| =",
            size,
        )
        memory_labels = v.guarded(
            ok, memory_labels, lambda: tf.zeros([size], tf.int32), [None]
        )
        q_a, _ = self.model.address_distributions(x, memory)
        probs = q_a.probs_parameter()  # [N, |M|]
        classes, index = tf.unique(memory_labels)
        class_probs = tf.transpose(
            tf.math.unsorted_segment_sum(tf.transpose(probs), index, tf.size(classes))
        )
        best = tf.argmax(class_probs, axis=-1, output_type=tf.int32)
        return {
            "classes": classes,
            "class_probs": class_probs,
            "predicted_label": tf.gather(classes, best),
        }

    def metadata(self) -> dict:
        """JSON-able description of the exported signatures."""
        sigs = {}
        for name, (_, specs) in self.signatures.items():
            sigs[name] = {
                s.name: {"dtype": s.dtype.name, "shape": self._doc_shape(s.name)}
                for s in specs
            }
        return {
            "kind": self.kind,
            "learned_memory": self.learned,
            "x_shape": list(self.x_shape),
            "memory_entry_shape": (
                list(self.entry_shape) if self.entry_shape is not None else None
            ),
            "default_signature": next(iter(self.signatures)),
            "signatures": sigs,
        }

    def _doc_shape(self, name: str) -> str:
        return {
            "x": f"[N, {_fmt(self.x_shape)}]",
            "memory": f"[|M|, {_fmt(self.entry_shape or ())}]",
            "memory_labels": "[|M|]",
            "seed": "[2]",
        }.get(name, "[]")


def build_archive(model, x_shape):
    """A `keras.export.ExportArchive` with every signature of `model`.

    Args:
        model: a built `VMA`, `VAE` or `SoftAttentionVAE`.
        x_shape: shape of one example.

    Returns:
        `(archive, functions)`: the archive and its `ServingFunctions`.
    """
    functions = ServingFunctions(model, x_shape)
    if not model.variables:
        raise ExportError("the model has no variables yet (build it first)")
    # Subclassed models create their variables in `compute_terms`, not in
    # `build`; mark them built so the archive accepts them.
    model.built = True
    archive = keras.export.ExportArchive()
    archive.track(model)
    for name, (fn, specs) in functions.signatures.items():
        archive.add_endpoint(name, fn, input_signature=specs)
    return archive, functions


def read_metadata(path) -> dict:
    """The `assets.extra/vma_export.json` of an exported version directory."""
    return json.loads((pathlib.Path(path) / EXPORT_METADATA).read_text())


def version_dir(export_dir, version: int) -> pathlib.Path:
    """`export_dir/<version>`; raises `ExportError` if it already exists."""
    path = pathlib.Path(export_dir).expanduser() / str(int(version))
    if path.exists():
        raise ExportError(
            f"{path} already exists; refusing to overwrite (choose another --version)"
        )
    return path


def export_model(model, x_shape, export_dir, version: int, extra=None):
    """Writes `model` to `export_dir/<version>` atomically.

    The SavedModel is written to a hidden temporary directory next to the
    target and renamed into place, so a server watching `export_dir` never
    sees a partial version.

    Args:
        model: a built model.
        x_shape: shape of one example.
        export_dir: the model base path (created if missing).
        version: positive integer version.
        extra: optional dict merged into `assets.extra/vma_export.json`.

    Returns:
        The `pathlib.Path` of the version directory.

    Raises:
        ExportError: the version directory exists or cannot be written.
    """
    if int(version) < 1:
        raise ExportError(f"version must be >= 1; got {version}")
    target = version_dir(export_dir, version)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = pathlib.Path(
            tempfile.mkdtemp(prefix=f".tmp-{target.name}-", dir=target.parent)
        )
    except OSError as e:
        raise ExportError(f"cannot write to {target.parent}: {e.strerror}") from None
    try:
        archive, functions = build_archive(model, x_shape)
        archive.write_out(str(tmp), verbose=False)
        meta = tmp / EXPORT_METADATA
        meta.parent.mkdir(parents=True, exist_ok=True)
        info = {**functions.metadata(), "version": int(version), **(extra or {})}
        meta.write_text(json.dumps(info, indent=2) + "\n")
        try:
            os.rename(tmp, target)  # Fails if target appeared meanwhile.
        except OSError:
            raise ExportError(
                f"{target} already exists; refusing to overwrite"
            ) from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def export_run(workdir, export_dir, version: int | None = None):
    """Exports the newest checkpoint of a training run.

    Args:
        workdir: a run directory written by `train_and_evaluate`.
        export_dir: model base path; the model goes to `export_dir/<version>`.
        version: version number (default: the checkpoint's step).

    Returns:
        `(path, step)`.

    Raises:
        WorkdirError: not a run / no checkpoint. ExportError: see
        `export_model`.
    """
    from vma_tf.experiment import load_run

    if version is not None:
        version_dir(export_dir, version)  # Fail before loading anything.
    config, model, data, step = load_run(workdir)
    version = step if version is None else version
    path = export_model(
        model,
        data.x_shape,
        export_dir,
        version,
        extra={"preset": config.name, "step": step, "workdir": str(workdir)},
    )
    return path, step
