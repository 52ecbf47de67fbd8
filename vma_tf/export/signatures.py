"""The serving signatures of a model, chosen by a registry.

`EXPORT_KINDS` says, once, what each kind of model exports: a map from
signature name to the `ServingFunctions` method that builds it. A method's
parameters name its inputs, whose specs are `INPUT_SPECS`; so the method
alone fixes a signature's inputs, and the first entry is `serving_default`.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Mapping

import numpy as np
import tensorflow as tf

from vma_tf.errors import ExportError
from vma_tf.export.validation import Validator, fmt_shape
from vma_tf.modeling.models import VAE, VMA, SoftAttentionVAE

# Upper bound of `num_samples` and `num` per request (bounds the work).
MAX_DRAWS = 10_000

# `log_likelihood` evaluates its K * N (sample, query) rows in chunks of about
# this many (at least one sample of every query per chunk), so the server's
# memory does not grow with K. Read when a model is exported.
CHUNK_ROWS = 4096

# Every signature input, by the parameter name of the methods below.
INPUT_SPECS = {
    "x": tf.TensorSpec(None, tf.float32, name="x"),
    "memory": tf.TensorSpec(None, tf.float32, name="memory"),
    "num_samples": tf.TensorSpec([], tf.int32, name="num_samples"),
    "seed": tf.TensorSpec(None, tf.int32, name="seed"),
    "k": tf.TensorSpec([], tf.int32, name="k"),
    "num": tf.TensorSpec([], tf.int32, name="num"),
    "memory_labels": tf.TensorSpec(None, tf.int32, name="memory_labels"),
}


@dataclasses.dataclass(frozen=True)
class ExportKind:
    """What one kind of model exports.

    Attributes:
        kind: the `kind` written to the export metadata.
        model_class: the models of this kind.
        learned_memory: matches models with (True) or without (False)
            learned memory; None matches both.
        signatures: ordered `{signature name: ServingFunctions method}`.
    """

    kind: str
    model_class: type
    learned_memory: bool | None
    signatures: Mapping[str, str]


EXPORT_KINDS = (
    ExportKind(
        "vma",
        VMA,
        False,
        {
            "log_likelihood": "log_likelihood",
            "address": "address",
            "sample": "sample",
            "classify": "classify",
        },
    ),
    ExportKind(
        "vma",
        VMA,
        True,
        {
            "log_likelihood": "log_likelihood_without_memory",
            "address": "address_without_memory",
            "sample": "sample_without_memory",
            "log_likelihood_with_memory": "log_likelihood",
            "address_with_memory": "address",
            "sample_with_memory": "sample",
            "classify": "classify",
        },
    ),
    ExportKind(
        "soft_attention",
        SoftAttentionVAE,
        False,
        {"log_likelihood": "log_likelihood", "sample": "sample_images"},
    ),
    ExportKind(
        "soft_attention",
        SoftAttentionVAE,
        True,
        {
            "log_likelihood": "log_likelihood_without_memory",
            "sample": "sample_images_from_learned_memory",
            "log_likelihood_with_memory": "log_likelihood",
            "sample_with_memory": "sample_images",
        },
    ),
    ExportKind(
        "vae",
        VAE,
        None,
        {
            "log_likelihood": "log_likelihood_without_memory",
            "sample": "sample_images_without_memory",
        },
    ),
)


def has_learned_memory(model) -> bool:
    memory = getattr(model, "memory", None)
    return bool(memory is not None and memory.learned)


def export_kind(model) -> ExportKind:
    """The first entry of `EXPORT_KINDS` that matches `model`."""
    learned = has_learned_memory(model)
    for entry in EXPORT_KINDS:
        if isinstance(model, entry.model_class) and entry.learned_memory in (
            None,
            learned,
        ):
            return entry
    raise ExportError(f"cannot export a {type(model).__name__}")


def signature(fn: Callable) -> tuple[Callable, list[tf.TensorSpec]]:
    """`(fn, input_signature)`: the specs of `fn`'s parameters, in order."""
    return fn, [INPUT_SPECS[name] for name in inspect.signature(fn).parameters]


class ServingFunctions:
    """The signature functions of a built `VMA`, `VAE` or `SoftAttentionVAE`.

    Args:
        model: a built model (variables created, weights restored).
        x_shape: shape of one example, e.g. `(784,)` or `(26, 26, 1)`.

    Attributes:
        kind: the model's `ExportKind`.
        signatures: ordered `{name: (fn, input_signature)}`; the first is also
            exported as `serving_default`.
    """

    def __init__(self, model, x_shape):
        self.model = model
        self.x_shape = tuple(int(s) for s in x_shape)
        self.kind = export_kind(model)
        memory = getattr(model, "memory", None)
        self.learned = has_learned_memory(model)
        self.entry_shape = tuple(memory.entry_shape) if memory is not None else None
        self.signatures = {
            name: signature(getattr(self, method))
            for name, method in self.kind.signatures.items()
        }

    # -- validation ---------------------------------------------------------------
    def _inputs(self, v: Validator, x=None, memory=None):
        if x is not None:
            x = v.batch(x, "x", self.x_shape, True, "N")
        if memory is not None:
            memory = v.batch(
                memory, "memory", self.entry_shape, not self.learned, "|M|"
            )
        return x, memory

    def _draw_inputs(self, memory, num, seed):
        """Validated `(memory, num, seed)` of a sampling signature."""
        v = Validator()
        _, memory = self._inputs(v, None, memory)
        num = v.scalar(num, 1, MAX_DRAWS, f"num must be in [1, {MAX_DRAWS}]")
        return memory, num, v.seed(seed)

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
        v = Validator()
        x, memory = self._inputs(v, x, memory)
        num_samples = v.scalar(
            num_samples,
            2,
            MAX_DRAWS,
            f"num_samples must be in [2, {MAX_DRAWS}] (K of the bound)",
        )
        seed = v.seed(seed)
        n = tf.shape(x)[0]
        # K is a tensor here, and `compute_terms` takes a Python K: c copies
        # of x are evaluated as one batch of c * N with K = 1, chunk j from
        # sample offset j. Its noise is the same Philox stream in the same
        # layout as rows j*c ... j*c + c - 1 of a `[K, N]` draw, so every
        # number equals `compute_terms(x, memory, K, seed)`'s to rounding. The
        # last chunk's rows past K are drawn and masked out.
        c = tf.minimum(tf.maximum(CHUNK_ROWS // n, 1), num_samples)
        multiples = tf.concat([[c], tf.ones([len(self.x_shape)], tf.int32)], 0)
        tiled = tf.tile(x, multiples)

        def chunk(j, log_sum, kl_z, recon, kl_a):
            terms = self.model.compute_terms(tiled, memory, 1, seed, sample_offset=j)
            valid = (j * c + tf.range(c) < num_samples)[:, None]  # [c, 1]

            def total(t, fill):  # [c * N] -> [N], over the chunk's valid rows.
                return tf.where(valid, tf.reshape(t, [c, n]), fill)

            this = tf.reduce_logsumexp(total(terms.log_weights, -np.inf), 0)
            log_sum = tf.reduce_logsumexp(tf.stack([log_sum, this]), 0)
            return (
                j + 1,
                log_sum,
                kl_z + tf.reduce_sum(total(terms.kl_z, 0.0), 0),
                recon + tf.reduce_sum(total(terms.recon, 0.0), 0),
                terms.kl_a[:n],
            )

        zeros = tf.zeros([n], self.model.head_dtype)
        _, log_sum, kl_z, recon, kl_a = tf.while_loop(
            lambda j, *_: j * c < num_samples,
            chunk,
            (tf.constant(0), zeros - np.inf, zeros, zeros, zeros),
        )
        k = tf.cast(num_samples, log_sum.dtype)
        return {
            "nll_bound": tf.math.log(k) - log_sum,
            "kl_a": kl_a,
            "kl_z": kl_z / k,
            "recon": recon / k,
        }

    def log_likelihood_without_memory(self, x, num_samples, seed):
        """`log_likelihood` with the learned memory (or none: a VAE)."""
        return self.log_likelihood(x, None, num_samples, seed)

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
        v = Validator()
        x, memory = self._inputs(v, x, memory)
        size = self._memory_size(memory)
        k = v.scalar(k, 1, size, "k must be in [1, |M|]")
        q_a, _ = self.model.address_distributions(x, memory)
        probs = q_a.probs_parameter()
        top = tf.math.top_k(probs, k)
        return {"probs": probs, "top_indices": top.indices, "top_probs": top.values}

    def address_without_memory(self, x, k):
        """`address` over the learned memory."""
        return self.address(x, None, k)

    def sample(self, memory, num, seed):
        """`num` samples of a VMA given the memory.

        Args:
            memory: float32 `[|M|, *m]` (None: learned memory).
            num: int32 scalar >= 1.
            seed: int32 `[2]`.

        Returns:
            `images` float32 `[num, *x]` Bernoulli means of p(x|z, m_a) and
            `addresses` int32 `[num]` (a ~ p(a), z ~ p(z|m_a)).
        """
        memory, num, seed = self._draw_inputs(memory, num, seed)
        seed_a, seed_z = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
        addresses = tf.cast(
            self.model.sample_prior_addresses(num, memory, seed_a), tf.int32
        )
        images = self.model.sample(addresses, memory, seed_z)
        return {"images": images, "addresses": addresses}

    def sample_without_memory(self, num, seed):
        """`sample` from the learned memory."""
        return self.sample(None, num, seed)

    def sample_images(self, memory, num, seed):
        """`{"images": [num, *x]}` of a soft-attention model given the memory."""
        memory, num, seed = self._draw_inputs(memory, num, seed)
        return {"images": self.model.sample(num, memory, seed)}

    def sample_images_from_learned_memory(self, num, seed):
        """`sample_images` of a soft-attention model from its learned memory."""
        return self.sample_images(None, num, seed)

    def sample_images_without_memory(self, num, seed):
        """`{"images": [num, *x]}` of a VAE (z ~ N(0, I))."""
        _, num, seed = self._draw_inputs(None, num, seed)
        return {"images": self.model.sample(num, seed)}

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
        v = Validator()
        x, memory = self._inputs(v, x, memory)
        memory_labels = v.labels(memory_labels, tf.shape(memory)[0])
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

    # -- description ----------------------------------------------------------------
    def metadata(self) -> dict:
        """JSON-able description of the exported signatures."""
        sigs = {}
        for name, (_, specs) in self.signatures.items():
            sigs[name] = {
                s.name: {"dtype": s.dtype.name, "shape": self._doc_shape(s.name)}
                for s in specs
            }
        return {
            "kind": self.kind.kind,
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
            "x": f"[N, {fmt_shape(self.x_shape)}]",
            "memory": f"[|M|, {fmt_shape(self.entry_shape or ())}]",
            "memory_labels": "[|M|]",
            "seed": "[2]",
        }.get(name, "[]")
